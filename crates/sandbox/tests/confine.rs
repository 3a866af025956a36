//! A confined process (what every worker is before it reads a model) cannot
//! open files, allocate past its bound, reach the network or start programs.
//! Each case runs in a child process (this test binary again), since
//! confinement cannot be undone.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

const CHILD: &str = "SANDBOX_CONFINE_CHILD";
const MIB: u64 = 1024 * 1024;

/// Runs `test` of this binary again, in a child told to confine itself and
/// then do `case`.
fn run_child(test: &str, case: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .output()
        .unwrap()
}

/// In the child: confines, then does `case`; reports each step on stdout.
fn child(case: &str) {
    sandbox::confine(256 * MIB).expect("confine");
    println!("confined");
    match case {
        "files" => {
            let read = std::fs::read("/etc/hostname");
            println!("open for reading: {}", if read.is_err() { "refused" } else { "allowed" });
            let write = std::fs::write("/tmp/sandbox-confine-test", b"x");
            println!("open for writing: {}", if write.is_err() { "refused" } else { "allowed" });
        }
        "memory" => {
            let mut small = Vec::<u8>::new();
            println!(
                "64 MiB: {}",
                if small.try_reserve_exact(64 * MIB as usize).is_ok() { "allowed" } else { "refused" }
            );
            drop(small);
            let mut large = Vec::<u8>::new();
            println!(
                "512 MiB: {}",
                if large.try_reserve_exact(512 * MIB as usize).is_ok() { "allowed" } else { "refused" }
            );
        }
        "network" => {
            let _ = std::net::TcpStream::connect("127.0.0.1:9");
            println!("still alive after connecting");
        }
        "programs" => {
            let _ = Command::new("/bin/true").status();
            println!("still alive after starting a program");
        }
        other => panic!("unknown case {other}"),
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_confined_process_opens_no_file() {
    if let Ok(case) = std::env::var(CHILD) {
        return child(&case);
    }
    let output = run_child("a_confined_process_opens_no_file", "files");
    let said = stdout(&output);
    assert!(said.contains("open for reading: refused"), "{said}");
    assert!(said.contains("open for writing: refused"), "{said}");
    assert!(output.status.success(), "{said} {:?}", output.status);
}

#[test]
fn a_confined_process_cannot_allocate_past_its_bound() {
    if let Ok(case) = std::env::var(CHILD) {
        return child(&case);
    }
    let output = run_child("a_confined_process_cannot_allocate_past_its_bound", "memory");
    let said = stdout(&output);
    assert!(said.contains("64 MiB: allowed"), "{said}");
    assert!(said.contains("512 MiB: refused"), "{said}");
}

#[test]
fn a_confined_process_that_reaches_for_the_network_or_a_program_is_killed() {
    if let Ok(case) = std::env::var(CHILD) {
        return child(&case);
    }
    for case in ["network", "programs"] {
        let output = run_child("a_confined_process_that_reaches_for_the_network_or_a_program_is_killed", case);
        let said = stdout(&output);
        assert!(said.contains("confined"), "{case}: {said}");
        assert!(!said.contains("still alive"), "{case}: {said}");
        assert_eq!(output.status.signal(), Some(libc::SIGSYS), "{case}: {said}");
    }
}
