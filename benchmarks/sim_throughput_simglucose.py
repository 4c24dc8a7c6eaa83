"""Time one simglucose 0.2.11 patient-day of the bench scenario (meals 45 g @ 07:00, 70 g @ 12:00,
80 g @ 18:00; BBController(target=140); Insulet; Dexcom; seed 1). CPU = time.process_time() around
SimObj.simulate() only, as /work/shared/reference/simglucose/NOTES.md section 4."""
import sys, time
from datetime import datetime, timedelta
from simglucose.simulation.env import T1DSimEnv
from simglucose.controller.basal_bolus_ctrller import BBController
from simglucose.sensor.cgm import CGMSensor
from simglucose.actuator.pump import InsulinPump
from simglucose.patient.t1dpatient import T1DPatient
from simglucose.simulation.scenario import CustomScenario
from simglucose.simulation.sim_engine import SimObj

start = datetime(2018, 1, 1, 0, 0, 0)
for name in sys.argv[1:]:
    scen = CustomScenario(start_time=start, scenario=[(7, 45), (12, 70), (18, 80)])
    env = T1DSimEnv(T1DPatient.withName(name), CGMSensor.withName("Dexcom", seed=1),
                    InsulinPump.withName("Insulet"), scen)
    sim = SimObj(env, BBController(target=140), timedelta(days=1), animate=False, path="/tmp/h1/sg_out")
    c0, w0 = time.process_time(), time.perf_counter()
    sim.simulate()
    print(f"{name}: CPU {time.process_time() - c0:.2f} s, wall {time.perf_counter() - w0:.2f} s", flush=True)
