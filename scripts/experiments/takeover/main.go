// Command takeover measures what the running kernel does when a FUSE connection changes hands: whether a
// second process can serve a mounted connection it received over SCM_RIGHTS without seeing INIT, what
// becomes of requests the first server read but did not answer, what FUSE_NOTIFY_RESEND re-delivers and with
// which unique ids (including a CREATE that was applied but not answered), what a kill -9 of the server does
// while another process holds a duplicate of the /dev/fuse descriptor, and what the last close does.
//
// Parts (a) to (c) speak the FUSE protocol on /dev/fuse directly (go-fuse's fuse package supplies the wire
// structs), to hold requests unanswered at will. Part (d) checks that an unmodified go-fuse fuse.Server, which
// insists on reading INIT first, can serve a taken-over connection when the recorded INIT is replayed to it.
// Part (e) hands a go-fuse mount over ten times in a row under a reading loop (planned: freeze, hand over,
// exit; the successor waits for the exit, resends, serves) and reports the pauses. Part (f), run with
// -crash-only N, kills a raw server N times under a reading loop, once reading into a buffer faulted in long
// before and once into fresh pages, and reports the reads that failed. With -mlock, each outgoing server of
// part (e) calls mlockall(MCL_CURRENT|MCL_FUTURE) before it freezes, so that no page of a reader's buffer is
// missing when its exit kills it, and the run reports what that took (time, resident and locked memory).
//
// Run it as root (it mounts with mount(2) and fd=N):
//
//	go run ./scripts/experiments/takeover run [-dir DIR] [-json] [-mlock] [-chain-only N | -crash-only N]
//
// The run prints one line per event (requests each server read, replies, client results) and ends with a
// summary of the findings; -json prints the summary as JSON as well. Its test (main_test.go) runs it and
// checks the findings that the take-over design relies on.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: takeover run [-dir DIR] [-json] | server ... | gofuse ... | client OP PATH [ARG]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runMain(os.Args[2:])
	case "server":
		err = serverMain(os.Args[2:])
	case "gofuse":
		err = goServerMain(os.Args[2:])
	case "client":
		os.Exit(clientMain(os.Args[2:]))
	default:
		err = fmt.Errorf("unknown role %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "takeover:", err)
		os.Exit(1)
	}
}
