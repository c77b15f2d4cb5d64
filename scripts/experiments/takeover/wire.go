package main

import (
	"encoding/json"
	"fmt"

	"golang.org/x/sys/unix"
)

// The driver and the servers talk over SOCK_SEQPACKET socket pairs: one JSON message per packet, with
// descriptors (the /dev/fuse connection) attached as SCM_RIGHTS.

// ctlMsg is a command from the driver to a server.
type ctlMsg struct {
	Cmd     string `json:"cmd"`            // hold, handover, resend, answer-held, late-reply, ping, exit
	Op      string `json:"op,omitempty"`   // hold: the opcode name to hold
	Name    string `json:"name,omitempty"` // hold, answer-held: the entry name
	Apply   bool   `json:"apply,omitempty"`
	Journal bool   `json:"journal,omitempty"`
	Via     string `json:"via,omitempty"` // handover: "peer" (the successor) or "ctl" (the driver, as fd holder)
	Exit    bool   `json:"exit,omitempty"`
	Unique  uint64 `json:"unique,omitempty"` // late-reply: the unique id to answer (with ENOENT)
}

// event is a report from a server to the driver.
type event struct {
	Ev     string `json:"ev"`
	Srv    string `json:"srv"`
	Unique uint64 `json:"unique,omitempty"`
	Op     string `json:"op,omitempty"`
	Node   uint64 `json:"node,omitempty"`
	Name   string `json:"name,omitempty"`
	Flags  uint32 `json:"flags,omitempty"`
	Errno  string `json:"errno,omitempty"`
	Detail string `json:"detail,omitempty"`
	Resent bool   `json:"resent,omitempty"`
	Pause  int64  `json:"pause_ns,omitempty"` // a successor's serving: ns since its predecessor froze
}

func (e event) String() string {
	s := fmt.Sprintf("[%s] %s", e.Srv, e.Ev)
	if e.Op != "" {
		s += " op=" + e.Op
	}
	if e.Unique != 0 {
		s += fmt.Sprintf(" unique=%#x", e.Unique)
		if e.Resent {
			s += fmt.Sprintf(" (resent, original %#x)", e.Unique&^uniqueResend)
		}
	}
	if e.Node != 0 {
		s += fmt.Sprintf(" node=%d", e.Node)
	}
	if e.Name != "" {
		s += " name=" + e.Name
	}
	if e.Flags != 0 {
		s += fmt.Sprintf(" flags=%#o", e.Flags)
	}
	if e.Errno != "" {
		s += " errno=" + e.Errno
	}
	if e.Detail != "" {
		s += " " + e.Detail
	}
	return s
}

func sendMsg(sock int, v any, fds ...int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(sock, b, oob, nil, 0)
}

// recvMsg reads one packet into v and returns the descriptors attached to it.
func recvMsg(sock int, v any) ([]int, error) {
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4*8))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("peer closed")
	}
	var fds []int
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for _, c := range cmsgs {
			r, err := unix.ParseUnixRights(&c)
			if err != nil {
				return nil, err
			}
			fds = append(fds, r...)
		}
	}
	return fds, json.Unmarshal(buf[:n], v)
}

func errnoName(err error) string {
	if err == nil {
		return "OK"
	}
	if e, ok := err.(unix.Errno); ok {
		return unix.ErrnoName(e)
	}
	return err.Error()
}
