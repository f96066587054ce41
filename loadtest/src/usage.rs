//! Resource usage of a process, read from Linux `/proc`: CPU time (`utime + stime` of
//! `/proc/PID/stat`, all threads), resident memory (`VmRSS` of `/proc/PID/status`) and the
//! open-files limit.
//!
//! CPU time comes in clock ticks; the tick rate is read from the auxiliary vector
//! (`AT_CLKTCK` in `/proc/self/auxv`) rather than assumed, with 100 Hz (Linux's `USER_HZ` on every
//! architecture we run on) as the fallback. A tick is 10 ms, so a CPU measurement is only as good as
//! ±1 tick: the scenarios run long enough for that to stay in the low percent.

use std::fmt;
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

/// `AT_CLKTCK` in the auxiliary vector.
const AT_CLKTCK: u64 = 17;
/// Linux's `USER_HZ`.
const DEFAULT_CLOCK_TICKS_PER_SEC: u64 = 100;

/// A process (or this thread) whose usage we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proc {
    /// This process, all threads.
    Current,
    /// The calling thread only.
    CurrentThread,
    /// Another process, all threads.
    Pid(u32),
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Current => f.write_str("/proc/self"),
            Self::CurrentThread => f.write_str("/proc/thread-self"),
            Self::Pid(pid) => write!(f, "/proc/{pid}"),
        }
    }
}

impl Proc {
    /// User plus system CPU time used so far.
    pub(crate) fn cpu(self) -> Result<Duration> {
        let path = format!("{self}/stat");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let ticks = parse_stat_ticks(&text).ok_or_else(|| anyhow!("no utime/stime in {path}"))?;
        Ok(ticks_to_duration(ticks, clock_ticks_per_sec()))
    }

    /// Time its threads spent runnable but waiting for a CPU (the second field of every
    /// `/proc/PID/task/TID/schedstat`, summed; threads that exited are not counted). On a
    /// machine of our own this stays near zero; when it grows, other processes were taking the
    /// CPU and latencies include that wait.
    pub(crate) fn run_delay(self) -> Result<Duration> {
        let dir = match self {
            Self::CurrentThread => {
                return Ok(Duration::from_nanos(read_run_delay(
                    "/proc/thread-self/schedstat",
                )?));
            }
            Self::Current => "/proc/self/task".to_owned(),
            Self::Pid(pid) => format!("/proc/{pid}/task"),
        };
        let mut total = 0;
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
            let path = entry?.path().join("schedstat");
            // A thread may exit between the listing and the read.
            total += read_run_delay(&path.to_string_lossy()).unwrap_or(0);
        }
        Ok(Duration::from_nanos(total))
    }

    /// The CPUs this process may run on (`Cpus_allowed_list`, e.g. as set by `taskset`).
    pub(crate) fn cpus_allowed(self) -> Result<Vec<usize>> {
        let path = format!("{self}/status");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .and_then(|list| parse_cpu_list(list.trim()))
            .ok_or_else(|| anyhow!("no Cpus_allowed_list in {path}"))
    }

    /// Resident set size in bytes.
    pub(crate) fn rss(self) -> Result<u64> {
        let path = format!("{self}/status");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_vmrss_kib(&text)
            .map(|kib| kib * 1024)
            .ok_or_else(|| anyhow!("no VmRSS in {path}"))
    }
}

/// `utime + stime` in ticks, from the text of `/proc/PID/stat`. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let mut fields = after.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`.
pub(crate) fn parse_vmrss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The soft limit on open files of this process, from `/proc/self/limits` (None: unlimited or
/// unreadable).
pub(crate) fn open_files_limit() -> Option<u64> {
    parse_open_files_limit(&fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_run_delay(path: &str) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_schedstat_wait(&text).ok_or_else(|| anyhow!("unexpected {path}: {text:?}"))
}

/// The run-queue wait (ns) from a `schedstat` line: `on-cpu-ns wait-ns timeslices`.
fn parse_schedstat_wait(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Parses a CPU list such as `0`, `0-3` or `0,2-3`.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// One CPU's time counters from `/proc/stat`, in ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    /// user + nice + system + steal: time spent on processes (or taken by the hypervisor).
    pub(crate) busy: u64,
    /// irq + softirq: interrupt work, on loopback mostly the network stack.
    pub(crate) irq: u64,
    /// All counters together.
    pub(crate) total: u64,
}

/// Per-CPU counters, indexed by CPU number.
pub(crate) fn system_cpus() -> Result<Vec<CpuTicks>> {
    let text = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    Ok(parse_proc_stat(&text))
}

fn parse_proc_stat(text: &str) -> Vec<CpuTicks> {
    let mut cpus = Vec::new();
    for line in text.lines() {
        // `cpu0 …`, not the `cpu  …` total.
        let Some(rest) = line
            .strip_prefix("cpu")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue;
        };
        let mut fields = rest.split_ascii_whitespace();
        let Some(Ok(n)) = fields.next().map(str::parse::<usize>) else {
            continue;
        };
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let v: Vec<u64> = fields.take(8).map(|f| f.parse().unwrap_or(0)).collect();
        let Ok([user, nice, system, idle, iowait, irq, softirq, steal]) = <[u64; 8]>::try_from(v)
        else {
            continue;
        };
        if cpus.len() <= n {
            cpus.resize(n + 1, CpuTicks::default());
        }
        cpus[n] = CpuTicks {
            busy: user + nice + system + steal,
            irq: irq + softirq,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
        };
    }
    cpus
}

/// How busy a set of CPUs was between two readings, in cores (1.0 = one CPU fully busy).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct CpuLoad {
    /// Process time (anyone's, ours included).
    pub(crate) busy: f64,
    /// Interrupt time.
    pub(crate) irq: f64,
}

/// The load on `cpus` between readings `a` and `b`.
pub(crate) fn cpu_load(a: &[CpuTicks], b: &[CpuTicks], cpus: &[usize]) -> CpuLoad {
    let mut load = CpuLoad::default();
    for &cpu in cpus {
        let (Some(x), Some(y)) = (a.get(cpu), b.get(cpu)) else {
            continue;
        };
        let total = y.total.saturating_sub(x.total);
        if total > 0 {
            load.busy += y.busy.saturating_sub(x.busy) as f64 / total as f64;
            load.irq += y.irq.saturating_sub(x.irq) as f64 / total as f64;
        }
    }
    load
}

/// Kernel TCP counters this tool reports (file, group, name, JSON key, table label). They are
/// per network namespace, so they count every process's loopback traffic, not only ours.
pub(crate) const TCP_COUNTERS: &[(&str, &str, &str, &str)] = &[
    (
        "TcpExt",
        "ListenOverflows",
        "tcp_listen_overflows",
        "listen-queue overflows (SYNs dropped)",
    ),
    (
        "TcpExt",
        "TCPSynRetrans",
        "tcp_syn_retransmits",
        "SYN retransmits",
    ),
    (
        "TcpExt",
        "TCPTimeouts",
        "tcp_timeouts",
        "retransmission timeouts",
    ),
    (
        "Tcp",
        "RetransSegs",
        "tcp_retransmitted_segments",
        "retransmitted segments",
    ),
    (
        "TcpExt",
        "TCPLossProbes",
        "tcp_loss_probes",
        "tail loss probes",
    ),
];

/// Values of [`TCP_COUNTERS`], in that order (0 when the kernel does not have one).
pub(crate) fn tcp_counters() -> Vec<u64> {
    let mut text = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    text.push_str(&fs::read_to_string("/proc/net/netstat").unwrap_or_default());
    TCP_COUNTERS
        .iter()
        .map(|&(group, name, _, _)| parse_net_counter(&text, group, name).unwrap_or(0))
        .collect()
}

/// One counter from the `/proc/net/snmp` / `/proc/net/netstat` format: a `Group: names…` line
/// followed by a `Group: values…` line.
fn parse_net_counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text
        .lines()
        .filter(|l| l.split_ascii_whitespace().next() == Some(prefix.as_str()));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(i) = names.split_ascii_whitespace().position(|n| n == name) {
            return values.split_ascii_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

/// The 1-minute load average.
pub(crate) fn loadavg() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second for `/proc/*/stat` times.
pub(crate) fn clock_ticks_per_sec() -> u64 {
    fs::read("/proc/self/auxv")
        .ok()
        .and_then(|auxv| parse_auxv(&auxv, AT_CLKTCK))
        .filter(|&hz| hz > 0)
        .unwrap_or(DEFAULT_CLOCK_TICKS_PER_SEC)
}

/// The value of `key` in a native-endian, 64-bit auxiliary vector.
fn parse_auxv(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let k = u64::from_ne_bytes(pair[..8].try_into().expect("chunk of 16"));
        let v = u64::from_ne_bytes(pair[8..].try_into().expect("chunk of 16"));
        (k == key).then_some(v)
    })
}

fn ticks_to_duration(ticks: u64, per_sec: u64) -> Duration {
    Duration::from_micros(ticks.saturating_mul(1_000_000) / per_sec)
}

/// CPU time of this process and of the watched servers at one instant.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// Each watched server's CPU time, in the order they were given.
    pub(crate) servers: Vec<Duration>,
    /// This process's CPU time.
    pub(crate) client: Duration,
    /// Each watched server's run-queue wait.
    pub(crate) server_waits: Vec<Duration>,
    /// This process's run-queue wait.
    pub(crate) client_wait: Duration,
    /// Every CPU's counters.
    pub(crate) system: Vec<CpuTicks>,
    /// [`TCP_COUNTERS`].
    pub(crate) tcp: Vec<u64>,
    /// When it was taken.
    pub(crate) at: std::time::Instant,
}

impl Snapshot {
    /// Reads every counter now.
    pub(crate) fn take(servers: &[Proc]) -> Result<Self> {
        Ok(Self {
            servers: servers.iter().map(|p| p.cpu()).collect::<Result<_>>()?,
            client: Proc::Current.cpu()?,
            server_waits: servers
                .iter()
                .map(|p| p.run_delay())
                .collect::<Result<_>>()?,
            client_wait: Proc::Current.run_delay()?,
            system: system_cpus()?,
            tcp: tcp_counters(),
            at: std::time::Instant::now(),
        })
    }

    /// CPU time each watched server used since `earlier` (same servers, same order).
    pub(crate) fn server_cpu_since(&self, earlier: &Self) -> Vec<Duration> {
        deltas(&earlier.servers, &self.servers)
    }

    /// Run-queue wait of each watched server since `earlier`.
    pub(crate) fn server_wait_since(&self, earlier: &Self) -> Vec<Duration> {
        deltas(&earlier.server_waits, &self.server_waits)
    }
}

/// Element-wise `b - a`, saturating (counters of a process that was replaced may go back).
fn deltas(a: &[Duration], b: &[Duration]) -> Vec<Duration> {
    a.iter().zip(b).map(|(a, b)| b.saturating_sub(*a)).collect()
}

/// Fraction of one core used during `cpu` of CPU time over `wall`.
pub(crate) fn utilisation(cpu: Duration, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        cpu.as_secs_f64() / wall.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_vectors() {
        let table: &[(&str, Option<u64>)] = &[
            (
                "1234 (switchboard-gat) S 1 1234 1234 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 9 0 1 2 3",
                Some(325),
            ),
            (
                "99 (a (weird) name) R 1 99 99 0 -1 0 0 0 0 0 7 8 0 0",
                Some(15),
            ),
            ("99 (name) R 1 99", None),
            ("no parenthesis", None),
            ("1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 8", None),
        ];
        for &(text, want) in table {
            assert_eq!(parse_stat_ticks(text), want, "{text}");
        }
    }

    #[test]
    fn status_vectors() {
        let status =
            "Name:\tswitchboard\nVmPeak:\t  100 kB\nVmRSS:\t   20480 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_vmrss_kib(status), Some(20480));
        assert_eq!(parse_vmrss_kib("Name:\tkthread\n"), None);
    }

    #[test]
    fn limits_vectors() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files_limit(limits), Some(20000));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_open_files_limit(unlimited), None);
    }

    #[test]
    fn auxv_lookup() {
        let mut auxv = Vec::new();
        for (k, v) in [(6u64, 4096u64), (17, 100), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(parse_auxv(&auxv, AT_CLKTCK), Some(100));
        assert_eq!(parse_auxv(&auxv, 99), None);
    }

    #[test]
    fn cpu_lists() {
        let table: &[(&str, Option<Vec<usize>>)] = &[
            ("0", Some(vec![0])),
            ("0-3", Some(vec![0, 1, 2, 3])),
            ("0,2-3,7", Some(vec![0, 2, 3, 7])),
            ("x", None),
            ("1-", None),
        ];
        for (list, want) in table {
            assert_eq!(&parse_cpu_list(list), want, "{list}");
        }
        assert!(!Proc::Current.cpus_allowed().expect("own status").is_empty());
    }

    #[test]
    fn proc_stat() {
        let a = parse_proc_stat(
            "cpu  9 9 9 9 9 9 9 9 0 0\ncpu0 10 0 5 80 5 0 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0 0 0\nintr 1 2\n",
        );
        assert_eq!(
            a,
            vec![
                CpuTicks {
                    busy: 15,
                    irq: 0,
                    total: 100
                },
                CpuTicks {
                    busy: 0,
                    irq: 0,
                    total: 100
                }
            ]
        );
        let b = parse_proc_stat("cpu0 60 0 15 110 5 2 8 0 0 0\ncpu1 50 0 0 150 0 0 0 0 0 0\n");
        let load = cpu_load(&a, &b, &[0]);
        assert!(
            (load.busy - 0.6).abs() < 1e-9 && (load.irq - 0.1).abs() < 1e-9,
            "{load:?}"
        );
        let both = cpu_load(&a, &b, &[0, 1, 5]);
        assert!((both.busy - 1.1).abs() < 1e-9, "{both:?}");
        assert!(!system_cpus().expect("/proc/stat").is_empty());
    }

    #[test]
    fn schedstat() {
        assert_eq!(
            parse_schedstat_wait("4028402118 4287366996 1963\n"),
            Some(4_287_366_996)
        );
        assert_eq!(parse_schedstat_wait("1"), None);
        Proc::Current.run_delay().expect("own schedstat");
        Proc::CurrentThread
            .run_delay()
            .expect("own thread schedstat");
    }

    #[test]
    fn net_counters() {
        let text = "Tcp: RtoAlgorithm RtoMin RetransSegs\nTcp: 1 200 96041\nUdp: InDatagrams\nUdp: 5\n\
                    TcpExt: SyncookiesSent ListenOverflows\nTcpExt: 0 7\n";
        assert_eq!(parse_net_counter(text, "Tcp", "RetransSegs"), Some(96041));
        assert_eq!(
            parse_net_counter(text, "TcpExt", "ListenOverflows"),
            Some(7)
        );
        assert_eq!(parse_net_counter(text, "TcpExt", "Missing"), None);
        assert_eq!(parse_net_counter(text, "IpExt", "InOctets"), None);
        assert_eq!(tcp_counters().len(), TCP_COUNTERS.len());
    }

    #[test]
    fn snapshot_deltas() {
        let ms = Duration::from_millis;
        assert_eq!(
            deltas(&[ms(10), ms(50)], &[ms(30), ms(40)]),
            [ms(20), ms(0)]
        );
        let me = Proc::Pid(std::process::id());
        let a = Snapshot::take(&[me, Proc::Current]).expect("own counters");
        let b = Snapshot::take(&[me, Proc::Current]).expect("own counters");
        assert_eq!(b.server_cpu_since(&a).len(), 2);
        assert_eq!(b.server_wait_since(&a).len(), 2);
        assert!(Snapshot::take(&[]).expect("no servers").servers.is_empty());
    }

    #[test]
    fn ticks() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(3, 1000), Duration::from_millis(3));
    }

    #[test]
    fn reads_this_process() {
        assert!(Proc::Current.rss().expect("own status is readable") > 0);
        Proc::Current.cpu().expect("own stat is readable");
        Proc::CurrentThread
            .cpu()
            .expect("own thread stat is readable");
        assert_eq!(clock_ticks_per_sec(), 100);
    }
}
