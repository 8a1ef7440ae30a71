//! The bench's workloads: small C storms shipped in `xtask/workloads/` (compiled by the
//! bench), their MCP-candidate twins, and a generated C project for the mixed job.

use std::{
    collections::HashMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{bench::BenchArgs, util};

/// Name the candidate storms run under: `(^|/)mcp-server-[\w.-]+` (on the program) in rules.yaml's
/// `launch_heuristics` matches it, so mcpwatch marks the process a suspected MCP server
/// at exec and grants it a capture budget.
pub const CANDIDATE_PREFIX: &str = "mcp-server-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// posix_spawn + wait of /bin/true.
    Exec,
    /// Loopback TCP socket + connect + close (a server thread accepts).
    Connect,
    /// sendto() of 64-byte datagrams to a loopback UDP socket.
    Udp,
    /// 64-byte writes into a pipe by a process that is not an MCP server.
    Pipe,
    /// 1-byte writes to /dev/null by a process that is not an MCP server.
    Write,
    /// HTTP/1.1 requests over a loopback keep-alive connection, not MCP.
    Http,
    /// The write storm by a process mcpwatch captures (an MCP candidate).
    CandidateWrite,
    /// The pipe storm by a candidate, bytes the payload prefilter rejects.
    CandidatePipe,
    /// The pipe storm by a candidate, every write a JSON-RPC line (copied out).
    CandidateJsonrpc,
    /// open+close of a file by a process outside every MCP server's tree.
    Open,
    /// The open storm by a candidate: a process in an MCP tree, every open reported.
    CandidateOpen,
    /// `make -s clean && make -s -j2 && ./prog` on a generated 25-file C project.
    Build,
}

impl Workload {
    pub const ALL: [Workload; 12] = [
        Self::Exec,
        Self::Connect,
        Self::Udp,
        Self::Pipe,
        Self::Write,
        Self::Http,
        Self::CandidateWrite,
        Self::CandidatePipe,
        Self::CandidateJsonrpc,
        Self::Open,
        Self::CandidateOpen,
        Self::Build,
    ];

    /// Source file in `xtask/workloads/` (none for the build).
    fn source(self) -> Option<&'static str> {
        Some(match self {
            Self::Exec => "exec_storm",
            Self::Connect => "connect_storm",
            Self::Udp => "udp_storm",
            Self::Pipe | Self::CandidatePipe | Self::CandidateJsonrpc => "pipe_storm",
            Self::Write | Self::CandidateWrite => "write_storm",
            Self::Http => "http_storm",
            Self::Open | Self::CandidateOpen => "open_storm",
            Self::Build => return None,
        })
    }

    pub fn candidate(self) -> bool {
        matches!(
            self,
            Self::CandidateWrite | Self::CandidatePipe | Self::CandidateJsonrpc | Self::CandidateOpen
        )
    }

    /// The same storm by a process that is not a candidate (the comparison row).
    pub fn non_candidate(self) -> Option<Workload> {
        match self {
            Self::CandidateWrite => Some(Self::Write),
            Self::CandidatePipe | Self::CandidateJsonrpc => Some(Self::Pipe),
            Self::CandidateOpen => Some(Self::Open),
            _ => None,
        }
    }

    /// Binary name the storm runs under.
    fn binary(self) -> String {
        let src = self.source().unwrap_or("build");
        if self.candidate() {
            format!("{CANDIDATE_PREFIX}{}", src.replace('_', "-"))
        } else {
            src.to_string()
        }
    }

    /// Human label, also the heading of its table.
    pub fn label(self) -> &'static str {
        match self {
            Self::Exec => "exec storm",
            Self::Connect => "connect storm",
            Self::Udp => "UDP storm",
            Self::Pipe => "pipe storm",
            Self::Write => "write storm",
            Self::Http => "HTTP storm",
            Self::CandidateWrite => "candidate write storm",
            Self::CandidatePipe => "candidate pipe storm",
            Self::CandidateJsonrpc => "candidate JSON-RPC pipe storm",
            Self::Open => "open storm",
            Self::CandidateOpen => "candidate open storm (in an MCP tree)",
            Self::Build => "mixed job (C build)",
        }
    }

    /// Stable key for `--json`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Connect => "connect",
            Self::Udp => "udp",
            Self::Pipe => "pipe",
            Self::Write => "write",
            Self::Http => "http",
            Self::CandidateWrite => "candidate_write",
            Self::CandidatePipe => "candidate_pipe",
            Self::CandidateJsonrpc => "candidate_jsonrpc",
            Self::Open => "open",
            Self::CandidateOpen => "candidate_open",
            Self::Build => "build",
        }
    }

    pub fn op(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Connect => "connect",
            Self::Udp => "datagram",
            Self::Http => "request",
            Self::Build => "build",
            Self::Open | Self::CandidateOpen => "open",
            _ => "write",
        }
    }

    /// Operations per run.
    pub fn count(self, args: &BenchArgs) -> u64 {
        match self {
            Self::Exec => args.execs,
            Self::Connect => args.connects,
            Self::Udp => args.datagrams,
            Self::Pipe | Self::CandidatePipe | Self::CandidateJsonrpc => args.pipe_writes,
            Self::Write | Self::CandidateWrite => args.writes,
            Self::Http => args.requests,
            Self::Open | Self::CandidateOpen => args.opens,
            Self::Build => 1,
        }
    }

    /// What one run does, for the heading.
    pub fn describe(self, args: &BenchArgs) -> String {
        let n = thousands(self.count(args));
        match self {
            Self::Exec => format!("{n} × posix_spawn+wait of /bin/true"),
            Self::Connect => format!("{n} × loopback TCP connect+close"),
            Self::Udp => format!("{n} × sendto of 64 B on loopback"),
            Self::Pipe => format!("{n} × 64 B into a pipe, not an MCP candidate"),
            Self::Write => format!("{n} × 1 B to /dev/null, not an MCP candidate"),
            Self::Http => format!("{n} × HTTP/1.1 request on loopback keep-alive, not MCP"),
            Self::CandidateWrite => format!("{n} × 1 B to /dev/null by `{}`", self.binary()),
            Self::CandidatePipe => format!("{n} × 64 B of 'x' into a pipe by `{}`", self.binary()),
            Self::CandidateJsonrpc => {
                format!(
                    "{n} × 64 B JSON-RPC notification lines into a pipe by `{}`",
                    self.binary()
                )
            }
            Self::Open => format!("{n} × open+close of /etc/hostname, outside every MCP tree"),
            Self::CandidateOpen => format!(
                "{n} × open+close of /etc/hostname by `{}`, in an MCP tree (each open reported)",
                self.binary()
            ),
            Self::Build => "make -s clean && make -s -j2 && ./prog, 24 modules + main".to_string(),
        }
    }

    /// Time unit of its per-op column: (ns per unit, name).
    pub fn unit(self) -> (f64, &'static str) {
        match self {
            Self::Exec | Self::Connect | Self::Udp | Self::Http => (1e3, "µs"),
            Self::Build => (1e6, "ms"),
            _ => (1.0, "ns"),
        }
    }

    /// Completeness can be counted for this storm (one event per operation).
    pub fn counted(self) -> bool {
        matches!(self, Self::Exec | Self::Connect)
    }

    /// Kernel drop counters of mcpwatch (`kind` labels) that concern this storm.
    pub fn agent_drop_kinds(self) -> &'static [&'static str] {
        match self {
            Self::Exec => &["exec", "fork", "exit"],
            Self::Connect => &["connect", "accept", "tcp", "socket"],
            Self::Udp => &["udp_flow"],
            Self::Open | Self::CandidateOpen => &["file"],
            Self::Build => &["exec", "fork", "exit", "payload"],
            _ => &["payload"],
        }
    }

    /// The storm waits on stdin for the bench's go (write and pipe storms).
    fn waits_for_go(self) -> bool {
        matches!(
            self,
            Self::Pipe
                | Self::Write
                | Self::CandidateWrite
                | Self::CandidatePipe
                | Self::CandidateJsonrpc
                | Self::Open
                | Self::CandidateOpen
        )
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Built workloads: one binary per workload (candidate twins are copies under the
/// candidate name) and the generated C project.
pub struct Programs {
    bins: HashMap<Workload, PathBuf>,
    cproj: PathBuf,
}

impl Programs {
    pub fn build(work: &Path) -> Result<Self> {
        let mut compiled: HashMap<&str, PathBuf> = HashMap::new();
        let mut bins = HashMap::new();
        for w in Workload::ALL {
            let Some(src) = w.source() else { continue };
            if !compiled.contains_key(src) {
                compiled.insert(src, compile(work, src)?);
            }
            let bin = if w.candidate() {
                let to = work.join(w.binary());
                std::fs::copy(&compiled[src], &to).with_context(|| format!("copying to {}", to.display()))?;
                to
            } else {
                compiled[src].clone()
            };
            bins.insert(w, bin);
        }
        let cproj = work.join("cproj");
        generate_c_project(&cproj)?;
        Ok(Self { bins, cproj })
    }

    pub fn exec_storm(&self) -> &Path {
        &self.bins[&Workload::Exec]
    }
}

pub fn compile(work: &Path, name: &str) -> Result<PathBuf> {
    let src = util::root()
        .join("xtask")
        .join("workloads")
        .join(format!("{name}.c"));
    let out = work.join(name);
    util::run(
        Command::new("cc")
            .args(["-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-lpthread"),
    )
    .with_context(|| format!("compiling {}", src.display()))?;
    Ok(out)
}

pub const C_MODULES: usize = 24;
const C_FUNCTIONS: usize = 8;

/// The mixed job (performance.md, Appendix A): 24 modules of 8 small string-hash
/// functions each, a main calling every module, a Makefile with a pattern rule.
fn generate_c_project(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    for i in 0..C_MODULES {
        let mut s = String::from("#include <stddef.h>\n\n");
        for j in 0..C_FUNCTIONS {
            s += &format!(
                "unsigned long f{i}_{j}(const char *s) {{\n    unsigned long h = {seed}UL;\n    \
                 for (size_t k = 0; s[k]; k++) h = (h ^ (unsigned char)s[k]) * 1099511628211UL + {j};\n    \
                 return h ^ (h >> {shift});\n}}\n\n",
                seed = 14695981039346656037u64 - (i * C_FUNCTIONS + j) as u64,
                shift = 7 + j,
            );
        }
        s += &format!("unsigned long mod{i}(void) {{\n    unsigned long h = 0;\n");
        for j in 0..C_FUNCTIONS {
            s += &format!("    h += f{i}_{j}(\"module {i} function {j}\");\n");
        }
        s += "    return h;\n}\n";
        write(&format!("m{i}.c"), s)?;
    }
    let mut main = String::from("#include <stdio.h>\n\n");
    for i in 0..C_MODULES {
        main += &format!("unsigned long mod{i}(void);\n");
    }
    main += "\nint main(void) {\n    unsigned long h = 0;\n";
    for i in 0..C_MODULES {
        main += &format!("    h ^= mod{i}();\n");
    }
    main += "    printf(\"%lx\\n\", h);\n    return 0;\n}\n";
    write("main.c", main)?;
    let objs: Vec<String> = (0..C_MODULES)
        .map(|i| format!("m{i}.o"))
        .chain(["main.o".into()])
        .collect();
    write(
        "Makefile",
        format!(
            "CFLAGS = -O2\nOBJS = {}\n\nprog: $(OBJS)\n\t$(CC) $(CFLAGS) -o $@ $(OBJS)\n\n\
             %.o: %.c\n\t$(CC) $(CFLAGS) -c -o $@ $<\n\nclean:\n\trm -f $(OBJS) prog\n",
            objs.join(" ")
        ),
    )
}

/// One finished run of a workload.
pub struct StormRun {
    pub pid: u32,
    /// The workload's own clock (the build: the bench's).
    pub ns_per_op: f64,
    pub wall_s: f64,
    /// User+system CPU of the workload and its descendants (RUSAGE_CHILDREN delta).
    pub cpu_s: f64,
    /// For candidates under a capturing monitor: it was marked before the timed loop.
    pub suspected: Option<bool>,
}

fn children_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `w` once. `before_go` is called with the storm's pid before its timed loop
/// starts (write and pipe storms wait for it); it returns whether the monitor marked
/// the process as a candidate, when that applies.
pub fn run(
    w: Workload,
    programs: &Programs,
    args: &BenchArgs,
    token: &str,
    before_go: impl FnOnce(u32) -> Option<bool>,
) -> Result<StormRun> {
    let n = w.count(args);
    let mut cmd = match w {
        Workload::Build => {
            let mut c = Command::new("sh");
            c.args(["-c", "make -s clean && make -s -j2 && ./prog >/dev/null"])
                .current_dir(&programs.cproj);
            c
        }
        _ => {
            let mut c = Command::new(&programs.bins[&w]);
            c.arg(n.to_string());
            match w {
                Workload::Exec => {
                    c.arg("/bin/true").arg(token);
                }
                Workload::Pipe | Workload::CandidatePipe => {
                    c.args(["64", "x"]);
                }
                Workload::CandidateJsonrpc => {
                    c.args(["64", "jsonrpc"]);
                }
                Workload::Open | Workload::CandidateOpen => {
                    c.arg("/etc/hostname");
                }
                _ => {}
            }
            c
        }
    };
    if w.waits_for_go() {
        cmd.env("STORM_WAIT", "1").stdin(Stdio::piped());
    } else {
        cmd.stdin(Stdio::null());
    }
    let cpu0 = children_cpu_s();
    let t0 = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", w.binary()))?;
    let pid = child.id();
    let suspected = before_go(pid);
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b"go\n").context("releasing the storm")?;
    }
    let out = child.wait_with_output()?;
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = children_cpu_s() - cpu0;
    if !out.status.success() {
        bail!("{} failed: {}", w.binary(), out.status);
    }
    let ns_per_op = if w == Workload::Build {
        wall_s * 1e9
    } else {
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix("ns_per_op=").and_then(|v| v.parse().ok()))
            .with_context(|| format!("no ns_per_op in the output of {}: {text:?}", w.binary()))?
    };
    Ok(StormRun {
        pid,
        ns_per_op,
        wall_s,
        cpu_s,
        suspected,
    })
}
