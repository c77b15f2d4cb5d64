package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// clientMain performs one file operation in its own process (a request the server holds blocks only this
// process) and prints its outcome as one line: "ok" and a detail, or the errno's name.
func clientMain(args []string) int {
	if len(args) < 2 {
		fmt.Println("usage: client OP PATH [ARG]")
		return 2
	}
	op, path := args[0], args[1]
	if op == "loop" {
		return loop(path)
	}
	var detail string
	var err error
	switch op {
	case "create-excl":
		var fd int
		fd, err = unix.Open(path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, 0o644)
		if err == nil {
			unix.Close(fd)
		}
	case "create":
		var fd int
		fd, err = unix.Open(path, unix.O_CREAT|unix.O_WRONLY, 0o644)
		if err == nil {
			unix.Close(fd)
		}
	case "stat":
		var st unix.Stat_t
		err = unix.Stat(path, &st)
		detail = fmt.Sprintf("ino=%d size=%d", st.Ino, st.Size)
	case "write":
		err = os.WriteFile(path, []byte(args[2]), 0o644)
	case "cat":
		var b []byte
		b, err = os.ReadFile(path)
		detail = fmt.Sprintf("%q", b)
	default:
		fmt.Println("unknown op", op)
		return 2
	}
	if err != nil {
		if errno, ok := err.(unix.Errno); ok {
			fmt.Println(unix.ErrnoName(errno))
		} else if pe, ok := err.(*os.PathError); ok {
			if errno, ok := pe.Err.(unix.Errno); ok {
				fmt.Println(unix.ErrnoName(errno))
			} else {
				fmt.Println(pe.Err)
			}
		} else {
			fmt.Println(err)
		}
		return 0
	}
	fmt.Println("ok", detail)
	return 0
}

// loop reads path over and over until its standard input closes, then prints how many reads it made,
// how many failed or read other bytes than "hello", and the slowest.
func loop(path string) int {
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	var ops, errs int
	var slowest time.Duration
	var first string
	for {
		select {
		case <-stop:
			fmt.Printf("ok ops=%d errors=%d slowest=%s first_error=%q\n", ops, errs, slowest, first)
			return 0
		default:
		}
		start := time.Now()
		b, err := os.ReadFile(path)
		slowest = max(slowest, time.Since(start))
		ops++
		if err != nil || string(b) != "hello" {
			errs++
			if first == "" {
				first = fmt.Sprintf("%q %v", b, err)
			}
		}
	}
}
