# Reference PK/PD trajectories from R deSolve for crates/models/pk/tests/pd.rs.
#
# One-compartment oral PK (CL 2 L/h, V 10 L, KA 1.5 /h, F 1, no lag; 100 mg into the depot at
# 0 h and 50 mg at 12 h) driving, in one ODE system (the response states do not interact):
#   Ce  effect compartment, dCe/dt = ke0 (C - Ce), ke0 0.7 /h (Sheiner et al. 1979)
#   R1..R4  Jusko's indirect-response models I-IV (Dayneka, Garg & Jusko 1993):
#     I   dR/dt = kin (1 - I(C)) - kout R
#     II  dR/dt = kin - kout (1 - I(C)) R
#     III dR/dt = kin (1 + S(C)) - kout R
#     IV  dR/dt = kin - kout (1 + S(C)) R
#   with I(C) = Imax C^g/(IC50^g + C^g), S(C) = Emax C^g/(EC50^g + C^g),
#   kin 10 /h, kout 0.5 /h (R0 = 20), Imax 0.9, Emax 3, IC50 = EC50 = 4 mg/L, g 1.5.
# Integrated by lsoda at rtol 1e-10, atol 1e-12 (time in hours).
#
# Run from the repository root:  Rscript tests/data/pk/pd_reference.R
# Writes tests/data/pk/deSolve_1cpt_oral_pd.csv.
library(deSolve)

p <- c(CL = 2, V = 10, KA = 1.5, ke0 = 0.7, kin = 10, kout = 0.5,
       Imax = 0.9, Emax = 3, C50 = 4, g = 1.5)
rhs <- function(t, y, p) {
  with(as.list(c(y, p)), {
    C <- central / V
    f <- C^g / (C50^g + C^g)
    I <- Imax * f
    S <- Emax * f
    list(c(
      depot = -KA * depot,
      central = KA * depot - CL / V * central,
      Ce = ke0 * (C - Ce),
      R1 = kin * (1 - I) - kout * R1,
      R2 = kin - kout * (1 - I) * R2,
      R3 = kin * (1 + S) - kout * R3,
      R4 = kin - kout * (1 + S) * R4
    ))
  })
}
r0 <- p[["kin"]] / p[["kout"]]
y0 <- c(depot = 100, central = 0, Ce = 0, R1 = r0, R2 = r0, R3 = r0, R4 = r0)
times <- sort(unique(c(seq(0, 48, by = 0.5), 0.1, 0.25, 11.9, 12.1, 13.3)))
ev <- data.frame(var = "depot", time = 12, value = 50, method = "add")
out <- ode(y0, times, rhs, p, method = "lsoda", rtol = 1e-10, atol = 1e-12,
           events = list(data = ev))
out <- as.data.frame(out)
write.csv(format(out, digits = 17), "tests/data/pk/deSolve_1cpt_oral_pd.csv",
          row.names = FALSE, quote = FALSE)
cat("wrote", nrow(out), "rows\n")
