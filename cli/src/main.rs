//! The `crosscheck` binary: the process's arguments, environment and standard streams handed to
//! [`crosscheck::run`], whose status is the exit status.

fn main() {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            std::process::exit(crosscheck::EXIT_ERROR);
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let io = crosscheck::Io { env: &env, stdin: &mut stdin, stdout: &mut stdout, stderr: &mut stderr };
    let code = runtime.block_on(crosscheck::run(std::env::args_os(), io));
    std::process::exit(code);
}
