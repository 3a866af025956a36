//! How a worker confines itself, without privileges, before it touches a
//! model: resource limits the kernel enforces, then a seccomp filter that
//! allows only the system calls a running model needs.
//!
//! What this gives, and what it does not, is written in ARCHITECTURE.md
//! ("Isolation").

use std::collections::BTreeMap;

use rustix::process::{Resource, Rlimit, setrlimit};

/// Why a worker could not confine itself. The server refuses to start
/// isolated workers that are not confined.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("cannot set the resource limit {0}: {1}")]
    Limit(&'static str, rustix::io::Errno),
    #[error("cannot set a process attribute ({0}): {1}")]
    Attribute(&'static str, rustix::io::Errno),
    #[error("cannot install the seccomp filter: {0}")]
    Seccomp(String),
}

/// Asks the kernel to kill this process when its parent (the server) dies,
/// and makes sure the parent has not died already.
pub fn die_with_parent() -> Result<(), ConfineError> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| ConfineError::Attribute("parent death signal", e))?;
    // Orphaned before the line above: the parent is now init (or a subreaper).
    if rustix::process::getppid().is_none_or(|parent| parent.as_raw_nonzero().get() == 1) {
        std::process::exit(3);
    }
    Ok(())
}

/// Limits this process to `memory_bytes_max` of address space, no core
/// dumps, no file writes, no new file descriptors or processes; then no new
/// privileges, not dumpable (no other process of the same user may trace it),
/// and the seccomp allow-list. Irreversible.
pub fn confine(memory_bytes_max: u64) -> Result<(), ConfineError> {
    let limit = |resource, name, value: u64| {
        setrlimit(resource, Rlimit { current: Some(value), maximum: Some(value) })
            .map_err(|e| ConfineError::Limit(name, e))
    };
    // Address space, not resident memory: a failed allocation is then a
    // clean failure inside the worker, never the kernel's OOM killer picking
    // a process (maybe the server's) when the machine runs short.
    limit(Resource::As, "RLIMIT_AS", memory_bytes_max)?;
    // A worker dying with 2 GiB mapped must not write a 2 GiB core file.
    limit(Resource::Core, "RLIMIT_CORE", 0)?;
    limit(Resource::Fsize, "RLIMIT_FSIZE", 0)?;
    // Standard input, output and error are all a worker ever has open.
    limit(Resource::Nofile, "RLIMIT_NOFILE", 3)?;
    // Ignored for root, but holds for the unprivileged user a server should run as.
    limit(Resource::Nproc, "RLIMIT_NPROC", 0)?;
    rustix::thread::set_no_new_privs(true).map_err(|e| ConfineError::Attribute("no new privileges", e))?;
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| ConfineError::Attribute("not dumpable", e))?;
    // Read a clock once while everything is still allowed: rustix goes
    // through libc (`use-libc`), whose vDSO clock needs nothing more, but
    // its own backend would first look for the vDSO in the auxiliary
    // vector (prctl PR_GET_AUXV, or /proc/self/auxv).
    cpu_time_us();
    install_seccomp_filter()
}

/// The system calls a worker makes once confined: reading requests and
/// writing answers on its pipes, memory (the allocator), futexes, signals
/// (an abort on a failed allocation), time and randomness (hash maps).
/// Every other call fails with EPERM (a probe of `/sys` falls back to its
/// default), and those in [`FATAL_SYSCALLS`] kill the worker.
const ALLOWED_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigreturn,
    // A timed wait interrupted by a signal (a debugger attaching, SIGSTOP
    // and SIGCONT) resumes through restart_syscall: refused, glibc's futex
    // wrapper aborts the worker ("unexpected error code").
    libc::SYS_restart_syscall,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_clock_gettime,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// System calls allowed with one argument only: reading the auxiliary
/// vector (`prctl(PR_GET_AUXV)`, how CPU features and the vDSO are found),
/// and on x86-64 asking for the AMX tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`,
/// which tract's int8 and bf16 kernels do the first time they run).
fn allowed_with_first_argument() -> Vec<(libc::c_long, u64)> {
    const PR_GET_AUXV: u64 = 0x4155_5856;
    #[allow(unused_mut)]
    let mut allowed = vec![(libc::SYS_prctl, PR_GET_AUXV)];
    #[cfg(target_arch = "x86_64")]
    {
        const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
        const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
        allowed.push((libc::SYS_arch_prctl, ARCH_GET_XCOMP_PERM));
        allowed.push((libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM));
    }
    allowed
}

/// System calls no model run makes, whose attempt means the worker's code
/// has been subverted: running programs, new processes or threads, tracing,
/// the network. They kill the worker with SIGSYS, which the server reports.
const FATAL_SYSCALLS: &[libc::c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_fork,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vfork,
];

/// Two filters: the fatal list (SIGSYS), then the allow-list (anything else:
/// EPERM). The kernel runs both and the stricter answer wins. In this order
/// because installing a filter takes a `prctl` that the allow-list refuses.
fn install_seccomp_filter() -> Result<(), ConfineError> {
    install_fatal_list()?;
    install_allow_list()
}

fn install_fatal_list() -> Result<(), ConfineError> {
    let seccomp = |e: seccompiler::Error| ConfineError::Seccomp(e.to_string());
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH).map_err(|e| seccomp(e.into()))?;
    let rules = FATAL_SYSCALLS.iter().map(|&number| (number, Vec::new())).collect();
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::KillProcess,
        arch,
    )
    .map_err(|e| seccomp(e.into()))?;
    let program: seccompiler::BpfProgram =
        filter.try_into().map_err(|e: seccompiler::BackendError| seccomp(e.into()))?;
    // Every thread of the process, should a library have started one.
    seccompiler::apply_filter_all_threads(&program).map_err(seccomp)
}

fn install_allow_list() -> Result<(), ConfineError> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let seccomp = |e: seccompiler::Error| ConfineError::Seccomp(e.to_string());
    let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH).map_err(|e| seccomp(e.into()))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED_SYSCALLS.iter().map(|&number| (number, Vec::new())).collect();
    for (number, first_argument) in allowed_with_first_argument() {
        let condition = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, first_argument)
            .map_err(|e| seccomp(e.into()))?;
        let rule = SeccompRule::new(vec![condition]).map_err(|e| seccomp(e.into()))?;
        rules.entry(number).or_default().push(rule);
    }
    let filter = seccompiler::SeccompFilter::new(
        rules,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        seccompiler::SeccompAction::Allow,
        arch,
    )
    .map_err(|e| seccomp(e.into()))?;
    let program: seccompiler::BpfProgram =
        filter.try_into().map_err(|e: seccompiler::BackendError| seccomp(e.into()))?;
    // Every thread of the process, should a library have started one.
    seccompiler::apply_filter_all_threads(&program).map_err(seccomp)
}

/// CPU time this process has used, user and system, in microseconds.
pub fn cpu_time_us() -> u64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    time.tv_sec as u64 * 1_000_000 + time.tv_nsec as u64 / 1_000
}
