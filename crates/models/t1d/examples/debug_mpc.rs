use medtwin_simulate::SolverOptions;
use medtwin_t1d::controller::{Controller, ControllerSpec};
use medtwin_t1d::env::{patient_seed, simulate_patient_with};
use medtwin_t1d::random_meals::RandomMealSpec;
use medtwin_t1d::scenario::Scenario;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let name = &a[1];
    let ctl = a.get(2).map(String::as_str).unwrap_or("mpc");
    let names = medtwin_t1d::patient_names();
    let idx = names.iter().position(|n| n == name).unwrap();
    let mut s = Scenario::reference_day(names.clone());
    s.timeline = medtwin_core::Timeline::new(2880.0);
    s.duration_min = 2880;
    s.sensor_noise = true;
    s.random_meals = Some(RandomMealSpec { seed: 1 });
    s.controller = if ctl == "mpc" {
        ControllerSpec::mpc_default()
    } else {
        ControllerSpec::default()
    };
    let p = medtwin_t1d::patient(name).unwrap();
    let mut c = Controller::new(&s.controller, &p);
    let mut ins = 0.0;
    let mut carbs = 0.0;
    simulate_patient_with(
        &p,
        &s,
        idx,
        patient_seed(1, idx),
        SolverOptions::default(),
        &mut c,
        |r| {
            ins += r.insulin_u_per_min;
            carbs += r.carbs_g_per_min;
            if r.t_min % 15 == 0 {
                println!(
                    "{:5} BG {:6.1} CGM {:6.1} ins15 {:6.3} carbs15 {:5.1}",
                    r.t_min, r.sc_glucose_mg_dl, r.cgm_mg_dl, ins, carbs
                );
                ins = 0.0;
                carbs = 0.0;
            }
        },
    )
    .unwrap();
}
