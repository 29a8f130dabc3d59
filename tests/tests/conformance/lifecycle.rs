//! Root contexts, VM start and timers (`conf_lifecycle`): Envoy 1.40 starts a
//! base VM and a VM of its own on the main thread, then one VM per worker,
//! each with a root context (`on_vm_start` 2 + N times for N workers); the
//! main thread's root and every worker's tick; a new configuration starts a
//! new root on each VM (and a new base VM) and ends the old ones; a graceful
//! stop ends every root. The test host does the same.

use std::time::Duration;

use jwt_proxy_tests::proxy::{Proxy, Setup};
use jwt_proxy_tests::{Upstream, raw, wasm};

pub(crate) fn setup(upstream: &Upstream, config: &str, workers: usize) -> Setup {
    Setup {
        wasm: wasm("conf_lifecycle"),
        config: config.to_owned(),
        workers,
        ..Setup::new(upstream.addr())
    }
}

/// The filter's lines that start with `prefix`.
pub(crate) fn lines(proxy: &Proxy, prefix: &str) -> Vec<String> {
    proxy
        .filter_log()
        .into_iter()
        .filter(|l| l.starts_with(prefix))
        .collect()
}

/// How many filter lines are exactly `line`.
pub(crate) fn count(proxy: &Proxy, line: &str) -> usize {
    proxy.filter_log().iter().filter(|l| *l == line).count()
}

/// A GET with `headers`; status and body.
pub(crate) fn get(proxy: &Proxy, headers: &[&str]) -> (u16, String) {
    let r = raw::exchange(
        proxy.addr(),
        &raw::bare("GET", "/", &[&["Connection: close"], headers].concat()),
    );
    (r.status, r.text())
}

#[test]
fn roots_start_and_tick_as_envoy_runs_them() {
    let upstream = Upstream::start();
    for workers in [1, 2] {
        let config = "tick=100 stop_after=3";
        for proxy in setup(&upstream, config, workers).both() {
            let name = proxy.name();
            let roots = 1 + workers;
            proxy.wait_for_lines("tick ctx=1 n=3", roots);
            // Every ticking root set its period to 0 (logged after its 3rd tick).
            proxy.wait_for_lines("tick_period ctx=1 ms=0 status=Ok(())", roots);
            // A stopped timer shows only by not firing: hold idle for four
            // periods, when a 4th tick would come (not a wait for an event).
            std::thread::sleep(Duration::from_millis(400));
            let log = proxy.filter_log();
            // The first VM's start, in Envoy's order.
            assert_eq!(
                log[..3],
                [
                    "root create ctx=1 nth_in_vm=1".to_owned(),
                    "vm_start ctx=1 vm_config=0".to_owned(),
                    format!(
                        "configure ctx=1 plugin_config={} plugin_name=jwt_proxy \
                         plugin_root_id=jwt_proxy plugin_vm_id=jwt_proxy",
                        config.len()
                    ),
                ],
                "{name}"
            );
            // A base VM and the main thread's, then one per worker; every one a fresh VM.
            let vms = 2 + workers;
            assert_eq!(
                count(&proxy, "root create ctx=1 nth_in_vm=1"),
                vms,
                "{name}"
            );
            assert_eq!(lines(&proxy, "root create").len(), vms, "{name}");
            assert_eq!(count(&proxy, "vm_start ctx=1 vm_config=0"), vms, "{name}");
            assert_eq!(lines(&proxy, "configure ctx=1 ").len(), vms, "{name}");
            assert_eq!(count(&proxy, "tick_period ctx=1 ms=100 status=Ok(())"), vms);
            // The main thread's root and each worker's tick; the base VM's never does.
            for n in 1..=3 {
                assert_eq!(count(&proxy, &format!("tick ctx=1 n={n}")), roots, "{name}");
            }
            assert_eq!(count(&proxy, "tick ctx=1 n=4"), 0, "{name}: period 0 stops");
            assert_eq!(count(&proxy, "tick_period ctx=1 ms=0 status=Ok(())"), roots);
            // Requests go to a worker's root only.
            let before = lines(&proxy, "http create").len();
            assert_eq!(get(&proxy, &[]).0, 200, "{name}");
            let created = lines(&proxy, "http create");
            assert_eq!(created.len(), before + 1, "{name}");
            assert_eq!(
                created.last().unwrap(),
                "http create ctx=2 root=1",
                "{name}"
            );
        }
    }
}

/// The gaps between one root's ticks (the filter's clock), by tick number, from its
/// `tick_gap` lines: `(n, ms)`.
fn gaps(proxy: &Proxy) -> Vec<(u32, u64)> {
    lines(proxy, "tick_gap ")
        .iter()
        .map(|l| {
            let field = |k: &str| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix(k))
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            };
            (u32::try_from(field("n=")).unwrap(), field("ms="))
        })
        .collect()
}

#[test]
fn a_tick_period_change_takes_effect_at_once() {
    let upstream = Upstream::start();
    let config = "tick=100 stop_after=2 retick=300";
    for proxy in setup(&upstream, config, 1).both() {
        let name = proxy.name();
        proxy.wait_for_lines("tick ctx=1 n=4", 2);
        assert_eq!(count(&proxy, "tick_period ctx=1 ms=300 status=Ok(())"), 2);
        // Two roots tick: every tick number twice; 100 ms apart, then 300 ms.
        let gaps = gaps(&proxy);
        for n in 1..=4 {
            let of_n: Vec<u64> = gaps.iter().filter(|g| g.0 == n).map(|g| g.1).collect();
            assert_eq!(of_n.len(), 2, "{name}: tick {n}: {gaps:?}");
            let range = if n <= 2 { 60..=200 } else { 250..=450 };
            assert!(of_n.iter().all(|ms| range.contains(ms)), "{name}: {gaps:?}");
        }
    }
}

#[test]
fn a_new_configuration_starts_new_roots_and_ends_the_old_ones() {
    let upstream = Upstream::start();
    let setup = Setup {
        discovery: true,
        ..setup(&upstream, "tick=100 stop_after=1", 1)
    };
    for proxy in setup.both() {
        let name = proxy.name();
        proxy.wait_for_lines("tick ctx=1 n=1", 2);
        let next = "tick=100 stop_after=1 x=1";
        assert!(proxy.reconfigure(next), "{name}");
        proxy.wait_for_lines("tick ctx=2 n=1", 2);
        proxy.wait_for_lines("root delete ctx=1", 2);
        // A fresh base VM (ctx 1), and a new root (ctx 2) on the main thread's VM and the
        // worker's, each started and configured.
        assert_eq!(count(&proxy, "root create ctx=1 nth_in_vm=1"), 4, "{name}");
        assert_eq!(count(&proxy, "root create ctx=2 nth_in_vm=2"), 2, "{name}");
        assert_eq!(lines(&proxy, "vm_start ").len(), 6, "{name}");
        let configured = format!("plugin_config={} ", next.len());
        assert_eq!(
            lines(&proxy, "configure ")
                .iter()
                .filter(|l| l.contains(&configured))
                .count(),
            3,
            "{name}"
        );
        // The old roots end, done then deleted; the base VM's never does.
        assert_eq!(count(&proxy, "root done ctx=1"), 2, "{name}");
        assert_eq!(count(&proxy, "root delete ctx=1"), 2, "{name}");
        // Requests use the new root.
        assert_eq!(get(&proxy, &[]).0, 200, "{name}");
        assert_eq!(
            lines(&proxy, "http create").last().unwrap(),
            "http create ctx=3 root=2",
            "{name}"
        );
    }
}

#[test]
fn a_graceful_stop_ends_the_workers_roots_then_the_main_threads() {
    let upstream = Upstream::start();
    for mut proxy in setup(&upstream, "none", 1).both() {
        let name = proxy.name();
        assert_eq!(get(&proxy, &[]).0, 200, "{name}");
        assert_eq!(count(&proxy, "root done ctx=1"), 0, "{name}");
        proxy.quit();
        let ends: Vec<String> = proxy
            .wait_for_lines("root d", 4)
            .into_iter()
            .filter(|l| l.starts_with("root done") || l.starts_with("root delete"))
            .collect();
        assert_eq!(
            ends,
            [
                "root done ctx=1",
                "root delete ctx=1",
                "root done ctx=1",
                "root delete ctx=1"
            ],
            "{name}"
        );
        // quit() returned once the proxy stopped (Envoy exited): its log is
        // complete, nothing more can come.
        assert_eq!(
            lines(&proxy, "root d").len(),
            4,
            "{name}: the base VM's root never ends"
        );
    }
}
