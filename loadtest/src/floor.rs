//! The `floor` scenario: what one small `write` on a loopback TCP connection costs in CPU.
//!
//! `sockets` connections on 127.0.0.1 (TCP_NODELAY, as the gateway sets it), a reader thread
//! draining them, and the main thread writing `size`-byte buffers one `write` call at a time,
//! round-robin over the connections. On loopback the writer's syscall also runs the receive path
//! into the peer's socket and wakes the reader, so the writer thread's CPU per write is the floor
//! a server pays per small delivery; the whole-process figure adds the reader's side.
//!
//! Two shapes matter:
//! - one connection, writes back to back (the defaults): the cheapest case, caches warm, the
//!   reader mostly awake and draining many writes per read;
//! - many connections written in bursts (`--sockets 1000 --bursts-per-sec 10`: each burst writes
//!   once to every connection, like one message fanned out to a 1 000-member room ten times a
//!   second): every write lands on a cold socket whose reader is asleep and must be woken. This
//!   is the floor for the gateway's per-delivery cost at low rate.
//!
//! Threads can be pinned (`--writer-cpu`, `--reader-cpu`) with `taskset -p` on their thread ids
//! (the crate has no libc binding for `sched_setaffinity`).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use tokio::io::AsyncReadExt;

use crate::cli;
use crate::report::Report;
use crate::usage::{Proc, clock_ticks_per_sec};

/// Read size of the draining thread with one connection.
const READ_BUFFER: usize = 64 * 1024;
/// Read size per connection when there are many.
const READ_BUFFER_MANY: usize = 4 * 1024;

/// Pins the calling thread to `cpu`.
fn pin_current_thread(cpu: u32) -> Result<()> {
    let link = std::fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
    let tid = link
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("unexpected /proc/thread-self link {link:?}"))?
        .to_owned();
    let output = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid])
        .output()
        .context("running taskset (util-linux) to pin a thread")?;
    ensure!(
        output.status.success(),
        "taskset -p -c {cpu} {tid} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// What the reader thread saw.
struct Drained {
    bytes: u64,
    reads: u64,
    cpu: Duration,
}

/// Drains one connection with blocking reads.
fn drain_one(mut socket: TcpStream) -> Result<(u64, u64)> {
    let mut buf = vec![0u8; READ_BUFFER];
    let (mut bytes, mut reads) = (0u64, 0u64);
    loop {
        let n = socket.read(&mut buf).context("reading")?;
        if n == 0 {
            return Ok((bytes, reads));
        }
        bytes += n as u64;
        reads += 1;
    }
}

/// Drains many connections, one task each on a current-thread runtime (as the load generator
/// reads its members).
fn drain_many(sockets: Vec<TcpStream>) -> Result<(u64, u64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for socket in sockets {
            socket.set_nonblocking(true)?;
            let mut socket = tokio::net::TcpStream::from_std(socket)?;
            tasks.spawn(async move {
                let mut buf = vec![0u8; READ_BUFFER_MANY];
                let (mut bytes, mut reads) = (0u64, 0u64);
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return (bytes, reads),
                        Ok(n) => {
                            bytes += n as u64;
                            reads += 1;
                        }
                    }
                }
            });
        }
        let (mut bytes, mut reads) = (0u64, 0u64);
        while let Some(joined) = tasks.join_next().await {
            let (b, r) = joined?;
            bytes += b;
            reads += r;
        }
        Ok((bytes, reads))
    })
}

fn drain(sockets: Vec<TcpStream>, cpu: Option<u32>) -> Result<Drained> {
    if let Some(cpu) = cpu {
        pin_current_thread(cpu)?;
    }
    let start = Proc::CurrentThread.cpu()?;
    let (bytes, reads) = match <[TcpStream; 1]>::try_from(sockets) {
        Ok([one]) => drain_one(one)?,
        Err(many) => drain_many(many)?,
    };
    Ok(Drained {
        bytes,
        reads,
        cpu: Proc::CurrentThread.cpu()?.saturating_sub(start),
    })
}

fn micros_per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// Connected pairs: (writer ends, reader ends).
fn pairs(n: usize) -> Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let (mut writers, mut readers) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let writer = TcpStream::connect(addr).context("connecting on loopback")?;
        writer.set_nodelay(true)?;
        writers.push(writer);
        readers.push(listener.accept()?.0);
    }
    Ok((writers, readers))
}

/// Runs the scenario.
pub(crate) fn run(cfg: &cli::Floor) -> Result<Report> {
    crate::idle::check_fd_limit(2 * cfg.sockets)?;
    let (writers, readers) = pairs(cfg.sockets)?;
    let reader_cpu = cfg.reader_cpu;
    let reader = thread::Builder::new()
        .name("floor-reader".to_owned())
        .spawn(move || drain(readers, reader_cpu))?;
    if let Some(cpu) = cfg.writer_cpu {
        pin_current_thread(cpu)?;
    }

    let loadavg = crate::usage::loadavg().unwrap_or(-1.0);
    let chunk = vec![0x5a_u8; cfg.size];
    let burst_interval =
        (cfg.bursts_per_sec > 0).then(|| Duration::from_secs_f64(1.0 / cfg.bursts_per_sec as f64));
    let process_start = Proc::Current.cpu()?;
    let thread_start = Proc::CurrentThread.cpu()?;
    let started = Instant::now();
    let mut next_burst = started;
    for i in 0..cfg.writes {
        let slot = (i % cfg.sockets as u64) as usize;
        if slot == 0
            && let Some(interval) = burst_interval
        {
            let now = Instant::now();
            if next_burst > now {
                thread::sleep(next_burst - now);
            }
            next_burst += interval;
        }
        // One `write` per buffer: a blocking socket takes the whole small buffer at once.
        let mut out = &writers[slot];
        let n = out.write(&chunk).context("writing")?;
        if n < chunk.len() {
            out.write_all(&chunk[n..]).context("writing")?;
        }
    }
    let write_wall = started.elapsed();
    let writer_cpu = Proc::CurrentThread.cpu()?.saturating_sub(thread_start);
    for writer in &writers {
        writer.shutdown(Shutdown::Write)?;
    }
    let drained = reader
        .join()
        .map_err(|_| anyhow!("reader thread panicked"))??;
    let wall = started.elapsed();
    let process_cpu = Proc::Current.cpu()?.saturating_sub(process_start);

    let mut report = Report::new("floor");
    report.add("writes", "writes", cfg.writes, "");
    report.add("write_bytes", "bytes per write", cfg.size as u64, "B");
    report.add(
        "sockets",
        "connections written round-robin",
        cfg.sockets as u64,
        "",
    );
    report.add(
        "bursts_per_sec",
        "bursts per second (0 = back to back)",
        cfg.bursts_per_sec,
        "/s",
    );
    let pin = |cpu: Option<u32>| cpu.map_or("no".to_owned(), |c| c.to_string());
    report.add(
        "writer_cpu_pin",
        "writer pinned to CPU",
        pin(cfg.writer_cpu),
        "",
    );
    report.add(
        "reader_cpu_pin",
        "reader pinned to CPU",
        pin(cfg.reader_cpu),
        "",
    );
    report.add("loadavg_1m", "load average (1 min) at start", loadavg, "");
    report.add(
        "wall_s",
        "wall time (writes + drain)",
        wall.as_secs_f64(),
        "s",
    );
    report.add(
        "writes_per_sec",
        "writes per second",
        cfg.writes as f64 / write_wall.as_secs_f64(),
        "/s",
    );
    report.add(
        "process_cpu_s",
        "process CPU (utime+stime)",
        process_cpu.as_secs_f64(),
        "s",
    );
    report.add(
        "process_cpu_us_per_write",
        "process CPU per write",
        micros_per(process_cpu, cfg.writes),
        "µs",
    );
    report.add(
        "writer_cpu_us_per_write",
        "writer thread CPU per write",
        micros_per(writer_cpu, cfg.writes),
        "µs",
    );
    report.add(
        "reader_cpu_us_per_write",
        "reader thread CPU per write",
        micros_per(drained.cpu, cfg.writes),
        "µs",
    );
    report.add("reads", "reads by the reader", drained.reads, "");
    report.add(
        "bytes_per_read",
        "bytes per read",
        drained.bytes as f64 / drained.reads.max(1) as f64,
        "B",
    );
    report.add(
        "clock_ticks_per_sec",
        "CPU clock ticks per second",
        clock_ticks_per_sec(),
        "Hz",
    );
    let expected = cfg.writes * cfg.size as u64;
    if drained.bytes != expected {
        report.problem(format!(
            "reader got {} bytes, {expected} were written",
            drained.bytes
        ));
    }
    if writer_cpu.as_secs_f64() < 0.5 {
        report.note("under 0.5 s of writer CPU: the 10 ms tick makes these figures coarse; use more --writes");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_move_every_byte() {
        let table = [(1, 0), (7, 0), (5, 1000)];
        for (sockets, bursts_per_sec) in table {
            let cfg = cli::Floor {
                writes: 2_000,
                size: 64,
                sockets,
                bursts_per_sec,
                writer_cpu: None,
                reader_cpu: None,
            };
            let report = run(&cfg).expect("loopback works");
            assert!(report.ok(), "{}", report.table());
            assert_eq!(report.json()["writes"], 2_000);
            assert_eq!(report.json()["sockets"], sockets as u64);
        }
    }
}
