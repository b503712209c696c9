//go:build !unix

package main

import (
	"os"
	"os/exec"
)

// isolate does nothing where there are no process groups.
func isolate(*exec.Cmd) {}

// signalJob sends sig to the command; where only a kill can be sent
// (Windows), any signal kills it.
func signalJob(cmd *exec.Cmd, sig os.Signal) {
	if cmd.Process.Signal(sig) != nil {
		_ = cmd.Process.Kill()
	}
}
