//go:build unix

package main

import (
	"os"
	"os/exec"
	"syscall"
)

// isolate puts the command in a process group of its own, so that a signal
// reaches the whole job (a shell script's children too); on Linux the
// command is also killed if run dies without stopping it.
func isolate(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(cmd.SysProcAttr)
}

// signalJob sends sig to the process group of the command.
func signalJob(cmd *exec.Cmd, sig os.Signal) {
	_ = syscall.Kill(-cmd.Process.Pid, sig.(syscall.Signal)) // ESRCH: it has just ended
}
