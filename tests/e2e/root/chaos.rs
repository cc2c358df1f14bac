//! Faults with a checker (issue 21's CI tier): clients create, update with a
//! resourceVersion precondition, read and delete ConfigMaps through every
//! server of three (or five) voters, each in its own network namespace,
//! while the leader is killed (`kill -9`, then restarted; with five voters
//! together with a follower), paused (SIGSTOP past the election timeout),
//! cut off from the others, or unheard (its sends dropped, every link lossy)
//! every 5 s for 60 s, and a watch follows the
//! same objects across reconnects. Every client operation is recorded with
//! its invocation and completion time; `skiff-history` then checks that each
//! object's history is linearizable and that the watch saw every
//! acknowledged write once, in order (`skiff bench chaos` runs the same
//! workload for longer).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use skiff_history::workload::{self, Load, Target};

use crate::common;

use super::store_cluster::{leader_index, start_cluster_on};

/// Run the workload against `voters` voters for 60 s while `fault` is
/// injected every 5 s, then check every object's history and the watch.
fn under_faults(
    what: &str,
    voters: usize,
    fault: impl FnMut(&mut [common::Server], &common::ServerNet) -> Result<()>,
) -> Result<()> {
    let root = tempfile::tempdir()?;
    under_faults_in(root.path(), what, voters, fault)
}

/// [`under_faults`] with the servers' data in `root`.
fn under_faults_in(
    root: &std::path::Path,
    what: &str,
    voters: usize,
    mut fault: impl FnMut(&mut [common::Server], &common::ServerNet) -> Result<()>,
) -> Result<()> {
    let net = common::ServerNet::new(voters)?;
    let mut servers = start_cluster_on(root, &[], Some(&net))?;
    let target = Target {
        apis: servers.iter().map(|s| s.api.clone()).collect(),
        token: servers[0].admin_token(),
        namespace: "default".into(),
    };
    let run = workload::run(&target, Load::default(), |faults| -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_secs(5));
            let injected = faults.inject(what, || fault(&mut servers, &net));
            net.heal();
            injected?;
        }
        Ok(())
    })
    .map_err(anyhow::Error::msg)
    .context("the fault run")?;
    let r = workload::check(&run, 5_000_000);
    println!(
        "chaos ({what}, {voters} voters): {} faults, {} operations ({} answered; {} write requests, {:.0}/s; {} acknowledged writes); checked in {:?}; the watch saw {} events; p99 write clear of faults {:.1} ms; longest wait for a write after a fault {:.0} ms",
        run.faults.len(),
        r.operations,
        r.answered,
        r.write_requests,
        r.write_requests as f64 / run.elapsed.as_secs_f64(),
        r.acknowledged_writes,
        r.checked_in,
        r.watch_events,
        r.p99_write_ms.unwrap_or(f64::NAN),
        r.unavailable_ms.first().map_or(f64::NAN, |u| u.1),
    );
    assert!(
        r.answered > 500,
        "too few operations answered: {}",
        r.answered
    );
    for (key, why) in &r.illegal {
        eprintln!("{key}: {why}");
    }
    assert!(
        r.illegal.is_empty(),
        "not linearizable: {:?}",
        r.illegal.iter().map(|i| &i.0).collect::<Vec<_>>()
    );
    assert!(
        r.undecided.is_empty(),
        "the checker gave up on: {:?}",
        r.undecided
    );
    assert!(
        r.watch_violations.is_empty(),
        "watch: {:?}",
        &r.watch_violations[..r.watch_violations.len().min(10)]
    );
    Ok(())
}

#[test]
fn leader_kills_keep_every_object_linearizable_and_the_watch_whole() -> Result<()> {
    // kill -9 of the leader, restarted 1.5 s later.
    under_faults("leader kill -9", 3, |servers, _| {
        let l = leader_index(servers)?;
        servers[l].kill();
        std::thread::sleep(Duration::from_millis(1500));
        servers[l].start()?;
        servers[l].wait_ready(Duration::from_secs(20))
    })
}

#[test]
fn a_paused_leader_keeps_every_object_linearizable_and_the_watch_whole() -> Result<()> {
    // SIGSTOP of the leader for 3 s (the election timeout is 0.8–1.6 s):
    // the others elect a new leader; the old one wakes up deposed, with
    // requests it took before the pause still in hand.
    under_faults("leader paused 3 s", 3, |servers, _| {
        let l = leader_index(servers)?;
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(servers[l].pid().context("leader pid")? as i32);
        kill(pid, Signal::SIGSTOP)?;
        std::thread::sleep(Duration::from_secs(3));
        kill(pid, Signal::SIGCONT)?;
        Ok(())
    })
}

#[test]
fn a_partitioned_leader_keeps_every_object_linearizable_and_the_watch_whole() -> Result<()> {
    // The leader cut off from both followers (both ways) for 3 s: they elect
    // another; the old one cannot commit what its clients still send it
    // (their writes time out or fail, never succeed unseen), and rejoins
    // as a follower.
    under_faults("leader partitioned 3 s", 3, |servers, net| {
        let l = leader_index(servers)?;
        net.isolate(l)?;
        std::thread::sleep(Duration::from_secs(3));
        net.heal();
        Ok(())
    })
}

#[test]
fn one_way_drops_and_lossy_links_keep_every_object_linearizable() -> Result<()> {
    // Every 5 s, for 3 s: the leader's messages to the followers dropped (it
    // still hears them), and every server losing 10 % of what it sends to
    // the others.
    under_faults(
        "leader's sends dropped 3 s, 10 % loss",
        3,
        |servers, net| {
            for i in 0..servers.len() {
                net.lose(i, 10)?;
            }
            let l = leader_index(servers)?;
            for j in (0..servers.len()).filter(|j| *j != l) {
                net.cut(l, j)?;
            }
            std::thread::sleep(Duration::from_secs(3));
            net.heal();
            Ok(())
        },
    )
}

#[test]
fn five_voters_losing_the_leader_and_a_follower_at_once_keep_every_object_linearizable()
-> Result<()> {
    // Five voters; every 5 s the leader and one follower are killed together
    // (the most a five-voter cluster survives) and restarted 1.5 s later.
    let mut round = 0;
    under_faults("leader and a follower kill -9", 5, |servers, _| {
        let l = leader_index(servers)?;
        round += 1;
        let f = (l + 1 + round % (servers.len() - 1)) % servers.len();
        servers[l].kill();
        servers[f].kill();
        std::thread::sleep(Duration::from_millis(1500));
        for i in [l, f] {
            servers[i].start()?;
        }
        for i in [l, f] {
            servers[i].wait_ready(Duration::from_secs(20))?;
        }
        Ok(())
    })
}

#[test]
fn a_leader_on_a_slow_disk_keeps_every_object_linearizable() -> Result<()> {
    // Every server's data on a disk of the test's; every 5 s, for 3 s, the
    // leader's writes to it throttled to 20 per second (each fsync waits
    // its turn), as a failing or overloaded disk does.
    let root = tempfile::tempdir()?;
    let disk = common::disk::SlowDisk::new(&root.path().join("disk"), 512)?;
    disk.limit(20)?;
    under_faults_in(
        &root.path().join("disk"),
        "leader's disk at 20 writes/s for 3 s",
        3,
        |servers, _| {
            let l = leader_index(servers)?;
            let pid = servers[l].pid().context("leader pid")?;
            disk.slow(pid)?;
            std::thread::sleep(Duration::from_secs(3));
            disk.fast(pid)
        },
    )
}
