//! What a process *is*, from its argv: the program after any wrappers (`timeout`,
//! `env`, `sudo`, `sh -c`, …), and what that program runs — the script an interpreter
//! runs, the module of `python -m`, the package a runner (`npx`, `uvx`, `pipx run`,
//! `bunx`, `uv run`, `npm exec`, `pnpm dlx`) starts, the image of `docker`/`podman run`.
//! The launch heuristics match their patterns against these parts, never against
//! every argument: `cp …/mcp-server-time x` is `cp`, and `pip install mcp-server-fetch`
//! is the script `pip`.

/// The part of what a process runs that a launch pattern is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// The program itself (argv\[0\] after wrappers), as written.
    Program,
    /// The file an interpreter (python, node, bun, deno, ruby, perl, php, a shell) runs.
    Script,
    /// The module of `python -m MODULE`.
    Module,
    /// What a package runner starts (`npx PKG`, `uvx PKG`, `pipx run PKG`, …).
    Package,
    /// The image of `docker run`/`podman run`.
    Image,
    /// The program's base name and its first argument (`mcp run`, `docker mcp`).
    Subcommand,
}

impl Position {
    /// Where a pattern applies when the rule file does not say: every name, but not
    /// the subcommand (whose argument may be any file name).
    pub const NAMES: [Position; 5] = [
        Position::Program,
        Position::Script,
        Position::Module,
        Position::Package,
        Position::Image,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Position::Program => "program",
            Position::Script => "script",
            Position::Module => "module",
            Position::Package => "package",
            Position::Image => "image",
            Position::Subcommand => "subcommand",
        }
    }
}

/// What one exec runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The exec'd program is a wrapper or a shell: it will exec or start the real
    /// command, which is judged on its own exec. Its parts below are those of the
    /// wrapped command, for the record only.
    pub wrapped: bool,
    /// The program after wrappers.
    pub program: String,
    /// `(position, value)` of what the program runs, if anything.
    pub target: Option<(Position, String)>,
    /// The package runner, when the target is a package (`npx`, `uvx`, …).
    pub runner: Option<String>,
    /// `"base-name first-arg"` of the program, when it has a first argument.
    pub subcommand: Option<String>,
}

impl Subject {
    /// The values a pattern with these positions is matched against.
    pub fn parts(&self) -> impl Iterator<Item = (Position, &str)> {
        let program = (!self.program.is_empty()).then_some((Position::Program, self.program.as_str()));
        let target = self.target.as_ref().map(|(p, v)| (*p, v.as_str()));
        let sub = self.subcommand.as_deref().map(|s| (Position::Subcommand, s));
        program.into_iter().chain(target).chain(sub)
    }
}

/// Wrappers and shells are walked through at most this many times (`sudo env timeout
/// nice sh -c …`): a bound, not a limit anyone reaches.
const MAX_HOPS: usize = 8;

pub fn basename(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Resolves what `argv` runs.
pub fn subject(argv: &[String]) -> Subject {
    let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut wrapped = false;
    for _ in 0..MAX_HOPS {
        let Some(&first) = args.first() else {
            return Subject {
                wrapped,
                ..Default::default()
            };
        };
        let base = basename(first);
        if let Some(rest) = unwrap(base, &args[1..]) {
            wrapped = true;
            match rest {
                Unwrapped::Argv(rest) => args = rest,
                Unwrapped::Shell(words) => {
                    let words = words.into_iter().skip_while(|w| *w == "exec").collect::<Vec<_>>();
                    // The words borrow from the argv strings, which outlive the loop.
                    args = words;
                }
            }
            continue;
        }
        return Subject {
            wrapped,
            ..runs(&args)
        };
    }
    Subject {
        wrapped,
        ..Default::default()
    }
}

enum Unwrapped<'a> {
    Argv(Vec<&'a str>),
    Shell(Vec<&'a str>),
}

/// Options of a wrapper that take a value as the next argument (short and long).
fn takes_value(wrapper: &str, opt: &str) -> bool {
    let list: &[&str] = match wrapper {
        "env" => &["-u", "--unset", "-C", "--chdir", "-S", "--split-string"],
        "timeout" => &["-s", "--signal", "-k", "--kill-after"],
        "nice" => &["-n", "--adjustment"],
        "ionice" => &["-c", "--class", "-n", "--classdata", "-p", "--pid"],
        "sudo" | "doas" => &[
            "-u",
            "--user",
            "-g",
            "--group",
            "-C",
            "--close-from",
            "-D",
            "--chdir",
            "-h",
            "--host",
            "-p",
            "--prompt",
            "-r",
            "--role",
            "-t",
            "--type",
            "-U",
            "--other-user",
            "-T",
            "--command-timeout",
        ],
        "stdbuf" => &["-i", "-o", "-e", "--input", "--output", "--error"],
        "systemd-run" => &[
            "-u",
            "--unit",
            "-p",
            "--property",
            "-E",
            "--setenv",
            "--uid",
            "--gid",
            "-M",
            "--machine",
            "-H",
            "--host",
            "--description",
            "--slice",
            "--working-directory",
            "--nice",
            "--on-active",
            "--on-calendar",
            "--timer-property",
            "--path-property",
            "--socket-property",
        ],
        "chrt" | "taskset" | "setsid" | "nohup" | "time" | "flock" => &[],
        _ => &[],
    };
    list.contains(&opt)
}

/// Positional arguments a wrapper takes before the command.
fn leading_positionals(wrapper: &str) -> usize {
    match wrapper {
        "timeout" => 1, // DURATION
        "taskset" => 1, // MASK
        "chrt" => 1,    // PRIORITY
        "flock" => 1,   // FILE
        _ => 0,
    }
}

const WRAPPERS: &[&str] = &[
    "env",
    "timeout",
    "nice",
    "ionice",
    "sudo",
    "doas",
    "setsid",
    "nohup",
    "stdbuf",
    "systemd-run",
    "chrt",
    "taskset",
    "time",
    "flock",
    "catchsegv",
    "xvfb-run",
    "dbus-run-session",
];
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "fish", "busybox",
];

/// If `base` wraps another command, what it runs: the argv after its own options,
/// or the words of a shell's `-c` string.
fn unwrap<'a>(base: &str, rest: &[&'a str]) -> Option<Unwrapped<'a>> {
    if SHELLS.contains(&base) {
        let mut i = 0;
        while i < rest.len() && rest[i].starts_with('-') {
            // `-c` may be combined with other single-letter flags (`-ec`, `-lc`).
            let o = rest[i];
            if !o.starts_with("--") && o.contains('c') {
                let cmd = rest.get(i + 1)?;
                return Some(Unwrapped::Shell(split_words(cmd)));
            }
            if o == "-o" || o == "+o" {
                i += 1;
            }
            i += 1;
        }
        // `sh script.sh args`: the shell is an interpreter, not a wrapper.
        return None;
    }
    if !WRAPPERS.contains(&base) {
        return None;
    }
    // `taskset -p PID` and `ionice -p PID` change a running process: no command.
    let mut i = 0;
    let mut positionals = leading_positionals(base);
    while i < rest.len() {
        let a = rest[i];
        if a == "--" {
            i += 1;
            break;
        }
        if base == "env" && !a.starts_with('-') && a.contains('=') {
            i += 1;
            continue;
        }
        if a.starts_with('-') && a.len() > 1 {
            if base == "env" && (a == "-S" || a == "--split-string") {
                // `env -S 'node server.js'` (shebang lines): split like a shell.
                return Some(Unwrapped::Shell(split_words(rest.get(i + 1)?)));
            }
            if !a.contains('=') && takes_value(base, a) {
                i += 1;
            }
            i += 1;
            continue;
        }
        if positionals > 0 {
            positionals -= 1;
            i += 1;
            continue;
        }
        break;
    }
    let cmd = rest.get(i..).unwrap_or_default();
    if cmd.is_empty() {
        return None;
    }
    Some(Unwrapped::Argv(cmd.to_vec()))
}

/// Words of a shell command string, as far as a launch line needs: whitespace and
/// quotes; the first command of a `&&`/`;`/`|` list.
fn split_words(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in s.split_whitespace() {
        if matches!(w, "&&" | "||" | ";" | "|" | "&") || w.ends_with(';') {
            let w = w.trim_end_matches(';');
            if !w.is_empty() {
                out.push(w.trim_matches(|c| c == '\'' || c == '"'));
            }
            break;
        }
        // Leading environment assignments (`FOO=1 node x.js`) are not the command.
        if out.is_empty() && !w.starts_with('-') && w.contains('=') && !w.contains('/') {
            continue;
        }
        out.push(w.trim_matches(|c| c == '\'' || c == '"'));
    }
    out
}

fn is_python(base: &str) -> bool {
    base.strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        || base == "pypy3"
        || base == "pypy"
}

/// What a program (not a wrapper) runs.
fn runs(args: &[&str]) -> Subject {
    let program = args[0];
    let base = basename(program);
    let subcommand = args
        .get(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| format!("{base} {a}"));
    let plain = |target: Option<(Position, String)>, runner: Option<String>| Subject {
        wrapped: false,
        program: program.to_string(),
        target,
        runner,
        subcommand: subcommand.clone(),
    };
    let rest = &args[1..];
    if is_python(base) {
        return match python_target(rest) {
            Some(PyTarget::Module(m)) => plain(Some((Position::Module, m.to_string())), None),
            Some(PyTarget::Script(s, after)) => script(program, s, after, &plain),
            None => plain(None, None),
        };
    }
    match base {
        "node" | "nodejs" | "ruby" | "perl" | "php" => match node_like_script(rest) {
            Some((s, after)) => script(program, s, after, &plain),
            None => plain(None, None),
        },
        "bun" => match rest.first() {
            Some(&"x") => package(program, "bunx", &rest[1..], &plain),
            Some(&"run") => match node_like_script(&rest[1..]) {
                Some((s, after)) => script(program, s, after, &plain),
                None => plain(None, None),
            },
            _ => match node_like_script(rest) {
                Some((s, after)) => script(program, s, after, &plain),
                None => plain(None, None),
            },
        },
        "deno" => match rest.first() {
            Some(&"run") => match node_like_script(&rest[1..]) {
                Some((s, _)) => plain(Some((Position::Script, s.to_string())), None),
                None => plain(None, None),
            },
            _ => plain(None, None),
        },
        // A shell running a script file (`bash start-server.sh`).
        b if SHELLS.contains(&b) => match rest.iter().find(|a| !a.starts_with('-')) {
            Some(s) => plain(Some((Position::Script, s.to_string())), None),
            None => plain(None, None),
        },
        _ => runner(program, base, rest, &plain).unwrap_or_else(|| plain(None, None)),
    }
}

/// An interpreter runs `script`: if the script is itself a package runner (`npx` is a
/// node script, `uvx` and `pipx` are Python ones), what it starts is the package.
fn script(
    program: &str,
    script: &str,
    after: &[&str],
    plain: &dyn Fn(Option<(Position, String)>, Option<String>) -> Subject,
) -> Subject {
    let base = basename(script);
    // `npm`'s own script is `npm-cli.js`, `npx`'s `npx-cli.js`.
    let base = base.strip_suffix("-cli.js").unwrap_or(base);
    if let Some(s) = runner(program, base, after, plain) {
        return s;
    }
    // Any other script, or a runner or tool that is not starting anything (`npm view
    // x`, `pipx install y`): the script itself, and its subcommand.
    let mut s = plain(Some((Position::Script, script.to_string())), None);
    s.subcommand = after
        .first()
        .filter(|a| !a.starts_with('-'))
        .map(|a| format!("{base} {a}"));
    s
}

/// `base` as a package runner: the package it starts, if this invocation starts one.
fn runner(
    program: &str,
    base: &str,
    rest: &[&str],
    plain: &dyn Fn(Option<(Position, String)>, Option<String>) -> Subject,
) -> Option<Subject> {
    match base {
        "npx" | "bunx" | "pnpx" => Some(package(program, base, rest, plain)),
        "uvx" => Some(package(program, "uvx", rest, plain)),
        "pipx" => (rest.first() == Some(&"run")).then(|| package(program, "pipx", &rest[1..], plain)),
        "npm" => matches!(rest.first(), Some(&"exec") | Some(&"x"))
            .then(|| package(program, "npm exec", &rest[1..], plain)),
        "pnpm" | "yarn" => (rest.first() == Some(&"dlx")).then(|| package(program, base, &rest[1..], plain)),
        "uv" => match (rest.first(), rest.get(1)) {
            (Some(&"tool"), Some(&"run")) => Some(package(program, "uvx", &rest[2..], plain)),
            (Some(&"run"), _) => {
                // `uv run [opts] CMD…`: what CMD is decides.
                let i = skip_options(&rest[1..], UV_RUN_VALUES);
                let cmd = rest.get(1 + i..).unwrap_or_default();
                if cmd.is_empty() {
                    return None;
                }
                let mut inner = subject(&cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>());
                inner.wrapped = false;
                if inner.target.is_none() {
                    // `uv run server.py` runs the script with the project's Python.
                    if cmd[0].ends_with(".py") {
                        inner.target = Some((Position::Script, cmd[0].to_string()));
                    } else {
                        inner.target = Some((Position::Package, cmd[0].to_string()));
                        inner.runner = Some("uv run".into());
                    }
                }
                Some(inner)
            }
            _ => None,
        },
        "docker" | "podman" | "nerdctl" => match rest.first() {
            Some(&"run") | Some(&"create") => {
                let i = skip_options(&rest[1..], CONTAINER_RUN_VALUES);
                let image = rest.get(1 + i)?;
                Some(Subject {
                    wrapped: false,
                    program: program.to_string(),
                    target: Some((Position::Image, image.to_string())),
                    runner: Some(base.to_string()),
                    subcommand: Some(format!("{base} run")),
                })
            }
            Some(&"container") if rest.get(1) == Some(&"run") => runner(program, base, &rest[1..], plain),
            _ => None,
        },
        _ => None,
    }
}

const UV_RUN_VALUES: &[&str] = &[
    "--with",
    "--with-requirements",
    "--python",
    "-p",
    "--project",
    "--directory",
    "--package",
    "--extra",
    "--group",
    "--index",
    "--index-url",
    "--env-file",
    "--from",
];
const CONTAINER_RUN_VALUES: &[&str] = &[
    "-e",
    "--env",
    "--env-file",
    "-v",
    "--volume",
    "--name",
    "-p",
    "--publish",
    "--network",
    "--net",
    "--entrypoint",
    "-w",
    "--workdir",
    "-u",
    "--user",
    "--mount",
    "-l",
    "--label",
    "--cpus",
    "-m",
    "--memory",
    "--platform",
    "--pull",
    "-h",
    "--hostname",
    "--add-host",
    "--cap-add",
    "--cap-drop",
    "--security-opt",
    "--ulimit",
    "--runtime",
    "--device",
    "--tmpfs",
    "--log-driver",
    "--log-opt",
    "--ipc",
    "--pid",
    "--cgroupns",
    "--restart",
    "--gpus",
    "--dns",
    "--stop-signal",
    "--stop-timeout",
    "--userns",
    "--uts",
    "--shm-size",
    "--pod",
    "--cidfile",
    "--annotation",
    "--group-add",
    "--expose",
    "--label-file",
    "--health-cmd",
    "--cgroup-parent",
    "--memory-swap",
    "--attach",
    "-a",
];
const RUNNER_VALUES: &[&str] = &[
    "-p",
    "--package",
    "-c",
    "--call",
    "--from",
    "--with",
    "--python",
    "--index-url",
    "--index",
    "--spec",
    "--pip-args",
    "--cache",
    "--registry",
    "--userconfig",
    "-w",
    "--workspace",
];

/// Index of the first argument that is not an option (or an option's value).
fn skip_options(args: &[&str], with_values: &[&str]) -> usize {
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        if a == "--" {
            return i + 1;
        }
        if !a.starts_with('-') || a == "-" {
            return i;
        }
        if !a.contains('=') && with_values.contains(&a) {
            i += 1;
        }
        i += 1;
    }
    i
}

/// A runner's package: `npx -y PKG`, `npx -p PKG CMD` (the package is PKG), `uvx
/// --from PKG CMD`.
fn package(
    program: &str,
    runner: &str,
    rest: &[&str],
    plain: &dyn Fn(Option<(Position, String)>, Option<String>) -> Subject,
) -> Subject {
    let explicit = rest
        .windows(2)
        .find_map(|w| matches!(w[0], "-p" | "--package" | "--from" | "--spec").then(|| w[1].to_string()));
    let explicit = explicit.or_else(|| {
        rest.iter().find_map(|a| {
            a.strip_prefix("--package=")
                .or_else(|| a.strip_prefix("--from="))
                .map(str::to_string)
        })
    });
    let i = skip_options(rest, RUNNER_VALUES);
    let positional = rest.get(i).map(|s| s.to_string());
    match explicit.or(positional) {
        Some(p) => plain(Some((Position::Package, p)), Some(runner.to_string())),
        None => {
            let _ = program;
            plain(None, Some(runner.to_string()))
        }
    }
}

enum PyTarget<'a> {
    Module(&'a str),
    Script(&'a str, &'a [&'a str]),
}

fn python_target<'a>(rest: &'a [&'a str]) -> Option<PyTarget<'a>> {
    let mut i = 0;
    while i < rest.len() {
        let a = rest[i];
        match a {
            "-m" => return rest.get(i + 1).map(|m| PyTarget::Module(m)),
            "-c" => return None,
            "-X" | "-W" | "--check-hash-based-pycs" => i += 2,
            _ if a.starts_with("-m") && a.len() > 2 => return Some(PyTarget::Module(&a[2..])),
            _ if a.starts_with("-c") => return None,
            _ if a.starts_with('-') => i += 1,
            _ => return Some(PyTarget::Script(a, &rest[i + 1..])),
        }
    }
    None
}

/// The script of `node [opts] SCRIPT args` (and ruby, perl, php, bun): `-e` code is none.
fn node_like_script<'a>(rest: &'a [&'a str]) -> Option<(&'a str, &'a [&'a str])> {
    const VALUES: &[&str] = &[
        "-r",
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
        "--env-file",
        "-C",
        "--conditions",
        "--title",
        "--input-type",
        "-I",
        "-x",
    ];
    let mut i = 0;
    while i < rest.len() {
        let a = rest[i];
        if matches!(a, "-e" | "--eval" | "-p" | "--print") {
            return None;
        }
        if a == "--" {
            return rest.get(i + 1).map(|s| (*s, &rest[i + 2..]));
        }
        if a.starts_with('-') {
            if !a.contains('=') && VALUES.contains(&a) {
                i += 1;
            }
            i += 1;
            continue;
        }
        return Some((a, &rest[i + 1..]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(line: &str) -> Subject {
        subject(&line.split(' ').map(str::to_string).collect::<Vec<_>>())
    }

    fn target(line: &str) -> Option<(Position, String)> {
        s(line).target
    }

    #[test]
    fn interpreters_run_scripts_and_modules() {
        assert_eq!(
            target("/venv/bin/python3 /venv/bin/mcp-server-time --local-timezone UTC"),
            Some((Position::Script, "/venv/bin/mcp-server-time".into()))
        );
        assert_eq!(
            target("python3 -u -X dev -m mcp_server_fetch"),
            Some((Position::Module, "mcp_server_fetch".into()))
        );
        assert_eq!(target("python3 -c import mcp_server_time"), None);
        assert_eq!(
            target(
                "node --enable-source-maps /x/node_modules/@modelcontextprotocol/server-memory/dist/index.js"
            ),
            Some((
                Position::Script,
                "/x/node_modules/@modelcontextprotocol/server-memory/dist/index.js".into()
            ))
        );
        assert_eq!(target("node -e require('mcp-server-x')"), None);
    }

    #[test]
    fn runners_start_packages() {
        let npx = s("node /usr/bin/npx -y @modelcontextprotocol/server-filesystem /tmp");
        assert_eq!(
            npx.target,
            Some((
                Position::Package,
                "@modelcontextprotocol/server-filesystem".into()
            ))
        );
        assert_eq!(npx.runner.as_deref(), Some("npx"));
        assert_eq!(
            target("/root/.local/bin/uv tool run --from mcp-server-fetch==1.0 mcp-server-fetch"),
            Some((Position::Package, "mcp-server-fetch==1.0".into()))
        );
        assert_eq!(
            target("/usr/bin/python3 /usr/bin/pipx run mcp-server-time"),
            Some((Position::Package, "mcp-server-time".into()))
        );
        assert_eq!(
            target("docker run -i --rm -e GITHUB_TOKEN -v /a:/b mcp/github"),
            Some((Position::Image, "mcp/github".into()))
        );
        assert_eq!(
            target("uv run --with mcp server.py"),
            Some((Position::Script, "server.py".into()))
        );
        assert_eq!(
            target(
                "node /usr/lib/node_modules/npm/bin/npm-cli.js exec -- @modelcontextprotocol/server-memory"
            ),
            Some((Position::Package, "@modelcontextprotocol/server-memory".into()))
        );
    }

    #[test]
    fn runners_and_tools_that_start_nothing_are_themselves() {
        for line in [
            "node /usr/bin/npm view @modelcontextprotocol/server-github",
            "node /usr/bin/npm pack @modelcontextprotocol/server-github",
            "/usr/bin/python3 /usr/bin/pipx install mcp-server-fetch",
            "/usr/bin/python3 /venv/bin/pip install mcp-server-fetch",
            "uv pip install mcp-server-fetch",
            "docker pull mcp/github",
        ] {
            let t = s(line);
            assert!(
                !matches!(t.target, Some((Position::Package | Position::Image, _))),
                "{line}: {t:?}"
            );
        }
    }

    #[test]
    fn wrappers_are_walked_through() {
        for line in [
            "timeout 40 node /x/server-sequential-thinking/dist/index.js",
            "timeout -s KILL 40 node /x/server-sequential-thinking/dist/index.js",
            "env -i PATH=/bin FOO=1 node /x/server-sequential-thinking/dist/index.js",
            "nice -n 5 node /x/server-sequential-thinking/dist/index.js",
            "sudo -u dev -- node /x/server-sequential-thinking/dist/index.js",
            "setsid -f node /x/server-sequential-thinking/dist/index.js",
            "systemd-run --user --scope -p MemoryMax=1G node /x/server-sequential-thinking/dist/index.js",
            "stdbuf -o L node /x/server-sequential-thinking/dist/index.js",
        ] {
            let t = s(line);
            assert!(t.wrapped, "{line}");
            assert_eq!(t.program, "node", "{line}");
            assert_eq!(
                t.target,
                Some((
                    Position::Script,
                    "/x/server-sequential-thinking/dist/index.js".into()
                )),
                "{line}"
            );
        }
        let sh = subject(&[
            "/bin/sh".into(),
            "-c".into(),
            "FOO=1 exec node /x/server-memory/dist/index.js --flag".into(),
        ]);
        assert!(sh.wrapped);
        assert_eq!(
            sh.target,
            Some((Position::Script, "/x/server-memory/dist/index.js".into()))
        );
        // A shebang line through `env -S`.
        let env_s = subject(&[
            "/usr/bin/env".into(),
            "-S".into(),
            "node --no-warnings".into(),
            "/x/s.js".into(),
        ]);
        assert!(env_s.wrapped);
        assert_eq!(env_s.program, "node");
        // The test client in front of a server is a client, not the server.
        let client = s("timeout 40 node client.mjs node /x/server-sequential-thinking/dist/index.js");
        assert_eq!(client.target, Some((Position::Script, "client.mjs".into())));
    }

    #[test]
    fn ordinary_tools_are_only_their_program() {
        for line in [
            "cp /venv/bin/mcp-server-time /tmp/x",
            "grep -r @modelcontextprotocol/server- .",
            "vim mcp-server.py",
            "git log -- mcp-server-x/",
            "less /x/mcp-server-fetch/README.md",
            "tar czf mcp-server-x.tgz mcp-server-x",
            "rsync -a mcp-server-x/ host:/y",
            "find . -name mcp-server-*",
        ] {
            let t = s(line);
            assert_eq!(t.target, None, "{line}");
            assert!(!t.program.contains("mcp"), "{line}");
        }
    }

    #[test]
    fn hops_are_bounded() {
        let argv: Vec<String> = std::iter::repeat_n("env", 100)
            .chain(["node", "x.js"])
            .map(str::to_string)
            .collect();
        let t = subject(&argv);
        assert!(t.wrapped);
        assert_eq!(t.target, None, "gave up after {MAX_HOPS} hops");
    }
}
