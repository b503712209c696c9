package main

import "syscall"

// setDeathSignal has the kernel kill the command when run dies (kill -9, the
// OOM killer) without stopping it: the lock, no longer refreshed, expires
// after its TTL, and the command must not go on without it. It reaches the
// command alone, not its children. The signal follows the thread that
// started the command, which the Go runtime keeps: run never locks one.
func setDeathSignal(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
