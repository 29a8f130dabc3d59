//! Shared queues (`conf_lifecycle` with `queue=q1`): every root registers the
//! queue; the last registrant (a worker's root, the last VM Envoy starts) is
//! notified, one `on_queue_ready` per enqueue from any VM, and dequeues in
//! order until `Empty`. Resolving by an unknown VM id or name is `NotFound`.

use crate::lifecycle::{count, get, lines, setup};
use jwt_proxy_tests::Upstream;

#[test]
fn an_enqueue_notifies_the_registering_root_once() {
    let upstream = Upstream::start();
    for workers in [1, 2] {
        for proxy in setup(&upstream, "queue=q1", workers).both() {
            let name = proxy.name();
            assert_eq!(
                count(&proxy, "register ctx=1 queue=q1 status=Ok"),
                2 + workers,
                "{name}"
            );
            assert_eq!(
                get(&proxy, &["x-enqueue: a,b"]),
                (200, "resolve=Ok enqueue=Ok enqueue=Ok".to_owned()),
                "{name}"
            );
            proxy.wait_for_lines("dequeue ctx=1 empty", 2);
            assert_eq!(
                lines(&proxy, "queue_ready "),
                ["queue_ready ctx=1 queue=Some(\"q1\")"; 2],
                "{name}: one notification per enqueue"
            );
            // In order; each notification drains the queue to Empty (with two workers the
            // second value may come in before or after the first notification runs).
            assert_eq!(
                lines(&proxy, "dequeue ctx=1 value="),
                ["dequeue ctx=1 value=a", "dequeue ctx=1 value=b"],
                "{name}"
            );
            assert_eq!(count(&proxy, "dequeue ctx=1 empty"), 2, "{name}");
            // The notified root drained it.
            assert_eq!(
                get(&proxy, &["x-dequeue: 2"]),
                (200, "resolve=Ok dequeue=Empty dequeue=Empty".to_owned()),
                "{name}"
            );
            assert_eq!(
                get(&proxy, &["x-enqueue: c", "x-vm-id: other"]),
                (200, "resolve=NotFound".to_owned()),
                "{name}"
            );
            assert_eq!(
                get(&proxy, &["x-enqueue: c", "x-queue: nope"]),
                (200, "resolve=NotFound".to_owned()),
                "{name}"
            );
            // A later enqueue that does notify: once its value is dequeued,
            // any notification for the refused ones would have come first.
            assert_eq!(
                get(&proxy, &["x-enqueue: d"]),
                (200, "resolve=Ok enqueue=Ok".to_owned()),
                "{name}"
            );
            proxy.wait_for_lines("dequeue ctx=1 value=d", 1);
            assert_eq!(
                lines(&proxy, "queue_ready ").len(),
                3,
                "{name}: a notification for a refused enqueue"
            );
        }
    }
}

#[test]
fn a_queue_whose_root_ended_notifies_nobody() {
    let upstream = Upstream::start();
    let setup = jwt_proxy_tests::proxy::Setup {
        discovery: true,
        ..setup(&upstream, "queue=q1", 1)
    };
    for proxy in setup.both() {
        let name = proxy.name();
        assert!(proxy.reconfigure("queue=q2"), "{name}");
        proxy.wait_for_lines("root delete ctx=1", 2);
        // q1's registrants are gone: the value is queued, nobody is told.
        assert_eq!(
            get(&proxy, &["x-enqueue: old", "x-queue: q1"]),
            (200, "resolve=Ok enqueue=Ok".to_owned()),
            "{name}"
        );
        assert_eq!(
            get(&proxy, &["x-enqueue: new", "x-queue: q2"]),
            (200, "resolve=Ok enqueue=Ok".to_owned()),
            "{name}"
        );
        // `old` was enqueued first: a notification for it would have come
        // before this one (one worker, notifications in order).
        proxy.wait_for_lines("dequeue ctx=2 value=new", 1);
        assert_eq!(
            lines(&proxy, "queue_ready "),
            ["queue_ready ctx=2 queue=Some(\"q2\")"],
            "{name}"
        );
        assert_eq!(
            get(&proxy, &["x-dequeue: 2", "x-queue: q1"]),
            (200, "resolve=Ok dequeue=old dequeue=Empty".to_owned()),
            "{name}"
        );
    }
}

#[test]
fn a_queue_the_main_threads_root_registered_notifies_it() {
    let upstream = Upstream::start();
    // Only the second root to start registers: Envoy's main-thread VM (after the base VM),
    // the test host's `test-host-main`.
    for proxy in setup(&upstream, "queue_at=2 queue=q1", 1).both() {
        let name = proxy.name();
        assert_eq!(
            lines(&proxy, "ordinal ctx=1 n="),
            [
                "ordinal ctx=1 n=1",
                "ordinal ctx=1 n=2",
                "ordinal ctx=1 n=3"
            ],
            "{name}"
        );
        assert_eq!(lines(&proxy, "register ").len(), 1, "{name}");
        assert_eq!(
            get(&proxy, &["x-enqueue: m"]),
            (200, "resolve=Ok enqueue=Ok".to_owned()),
            "{name}"
        );
        proxy.wait_for_lines("dequeue ctx=1 empty", 1);
        assert_eq!(
            lines(&proxy, "queue_ready "),
            ["queue_ready ctx=1 queue=Some(\"q1\") ordinal=2"],
            "{name}: the worker's request, the main thread's root"
        );
        assert_eq!(
            lines(&proxy, "dequeue ctx=1 value="),
            ["dequeue ctx=1 value=m"]
        );
    }
}
