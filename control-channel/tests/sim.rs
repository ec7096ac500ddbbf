use control_channel::sim::{random_scenario, Sim, SimConfig};
use std::time::Duration;

#[test]
fn three_members_converge() {
    let mut sim = Sim::new(&SimConfig::new(1, 3));
    let t = sim.run_until_converged(Duration::from_secs(2));
    assert!(t.is_some(), "{:?}", sim.committed_ids());
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

#[test]
fn few_random_scenarios() {
    for seed in 0..20 {
        let o = random_scenario(seed);
        assert!(o.violations.is_empty(), "{o:?}");
        assert!(o.convergence_ms.is_some(), "{o:?}");
    }
}
