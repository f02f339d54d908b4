// Package agentproto is the wire format between dockerpool and
// dockerpool-agent, the small program that can run as a container's main
// process and start commands for the pool without a Docker exec.
//
// The pool talks to the agent over the container's attach stream: frames go
// to the agent's stdin and come back on its stdout (stderr carries the
// agent's own log lines). Every frame is
//
//	type  uint8     one of the Type constants
//	id    uint32    the exec (or request) it belongs to; 0 for the connection
//	len   uint32    length of the payload, at most MaxPayload
//	payload         len bytes: JSON for control frames, raw bytes for data
//
// all integers big-endian. Many execs share one connection, told apart by id;
// the pool chooses the ids.
//
// A session starts with the agent sending Hello; the pool checks the version
// and answers Hello. Then, for each command:
//
//	pool → agent   Exec{...}            start it
//	pool → agent   Stdin data ... StdinEOF
//	agent → pool   Stdout / Stderr data, as it comes
//	pool → agent   Kill                 (on timeout or cancel)
//	agent → pool   Exit{...}            always last for that id
//
// for each terminal (a command on a pseudo-terminal the agent allocates):
//
//	pool → agent   Term{...}            start it, with the terminal's size
//	pool → agent   Stdin data ...       keystrokes
//	pool → agent   Resize{...}          the terminal's new size
//	agent → pool   Stdout data, as it comes: what the program writes to the
//	               terminal (no Stderr: one terminal has one output)
//	pool → agent   Kill                 (on close or cancel)
//	agent → pool   Exit{...}            always last for that id
//
// and for each file transfer:
//
//	pool → agent   Put{...}             write a file, or unpack a tar, from
//	pool → agent   Stdin data ... StdinEOF
//	pool → agent   Get{...}             read a file, or pack a tar, to
//	agent → pool   Stdout data ...
//	pool → agent   Kill                 abort it
//	agent → pool   Done{...}            always last for that id
//
// Flow control. Data goes both ways under a window of credit per id and
// direction, as in HTTP/2: the sender of Stdin, Stdout and Stderr data may
// have at most Window bytes of it that the receiver has not acknowledged yet,
// and the receiver acknowledges what it consumed (wrote to the command, the
// file, or the pool's caller) with Grant frames whose payload is the count
// of bytes, a big-endian uint32. So a command that does not read its input,
// or a caller that reads its output slowly, holds at most Window bytes in the
// other side's memory and stalls only its own stream, never the connection.
//
// Reset asks the agent to kill every process it started and empty
// directories; it answers ResetDone. Ping is answered by Pong.
package agentproto

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version of the protocol. The agent announces it in Hello; the pool refuses
// an agent of another version. Version 2 added flow control, file transfers,
// resource usage, per-command limits and terminals.
const Version = 2

// Window is the credit each side starts with, per id and direction: the
// bytes of data that may be in flight unacknowledged.
const Window = 1 << 20

// Chunk is the largest data payload either side sends.
const Chunk = 64 << 10

// MaxPayload bounds a frame's payload. Data is sent in chunks of at most
// this size.
const MaxPayload = 1 << 20

// HeaderSize is the size of a frame header.
const HeaderSize = 9

// Type is the kind of a frame.
type Type uint8

// Frame types. Control frames carry JSON; data frames carry bytes.
const (
	Hello     Type = 'H' // both ways: HelloMsg
	Exec      Type = 'E' // pool → agent: ExecMsg
	Stdin     Type = 'I' // pool → agent: data for the command's stdin
	StdinEOF  Type = 'i' // pool → agent: close the command's stdin
	Kill      Type = 'K' // pool → agent: kill the command and all it started
	Stdout    Type = 'O' // agent → pool: data
	Stderr    Type = 'R' // agent → pool: data
	Exit      Type = 'X' // agent → pool: ExitMsg, the last frame of an exec
	Reset     Type = 'Z' // pool → agent: ResetMsg
	ResetDone Type = 'z' // agent → pool: ResetDoneMsg
	Ping      Type = 'P' // pool → agent
	Pong      Type = 'p' // agent → pool
	Grant     Type = 'W' // both ways: 4 bytes, big-endian: credit, for data of this id consumed
	Put       Type = 'F' // pool → agent: PutMsg; Stdin frames carry the data
	Get       Type = 'G' // pool → agent: GetMsg; Stdout frames carry the data
	Done      Type = 'D' // agent → pool: DoneMsg, the last frame of a Put or Get
	Term      Type = 'T' // pool → agent: TermMsg: start a command on a terminal
	Resize    Type = 'S' // pool → agent: ResizeMsg: a terminal's new size
)

// HelloMsg opens the session.
type HelloMsg struct {
	Version int    `json:"version"`
	Agent   string `json:"agent,omitempty"` // name and build of the agent
	PID     int    `json:"pid,omitempty"`   // the agent's PID in the container
	// Socket, in the agent's hello on stdout: it is connected to the
	// pool's socket (SocketEnv), and its hello there carries the Token.
	// The session moves there when the pool's hello comes on the socket.
	Socket bool   `json:"socket,omitempty"`
	Token  string `json:"token,omitempty"`
}

// SocketEnv and TokenEnv, in the agent's environment, name the pool's unix
// socket (bind-mounted into the container) and the token that proves to the
// pool that the connection is this container's agent. The agent removes
// both from its environment before it runs anything.
const (
	SocketEnv = "DOCKERPOOL_AGENT_SOCKET"
	TokenEnv  = "DOCKERPOOL_AGENT_TOKEN"
)

// ExecMsg starts a command.
type ExecMsg struct {
	Argv      []string `json:"argv"`
	Env       []string `json:"env,omitempty"`  // added to the agent's environment
	Dir       string   `json:"dir,omitempty"`  // working directory
	User      string   `json:"user,omitempty"` // uid[:gid] or a name from /etc/passwd
	TimeoutMS int64    `json:"timeout_ms,omitempty"`
	Limit     int64    `json:"limit,omitempty"` // stdout+stderr bytes; 0: none
	Stdin     bool     `json:"stdin,omitempty"` // Stdin frames follow; else stdin is empty

	// Limits of the command's processes; 0: none.
	CPUTimeMS    int64 `json:"cpu_time_ms,omitempty"`    // user+system of all of them together
	MaxFileSize  int64 `json:"max_file_size,omitempty"`  // RLIMIT_FSIZE, bytes
	MaxOpenFiles int   `json:"max_open_files,omitempty"` // RLIMIT_NOFILE
}

// TermMsg starts a command on a new pseudo-terminal: the program is the
// leader of a new session whose controlling terminal it is, its standard
// input, output and error. Stdin frames are what is typed on it, Stdout
// frames what the program writes to it. The exec ends when the program
// exits (what it left that still holds the terminal is hung up), with an
// Exit as for Exec.
type TermMsg struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env,omitempty"`
	Dir  string   `json:"dir,omitempty"`
	User string   `json:"user,omitempty"`
	Rows uint16   `json:"rows"`
	Cols uint16   `json:"cols"`
}

// ResizeMsg changes the size of a terminal (the program gets SIGWINCH).
type ResizeMsg struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// ExitMsg ends an exec.
type ExitMsg struct {
	// Code is the exit status; -1 when the command did not finish (killed on
	// timeout, limit or Kill) or could not start.
	Code int `json:"code"`
	// NotFound / NotExecutable: the command could not start (127 / 126).
	StartError string `json:"start_error,omitempty"`
	TimedOut   bool   `json:"timed_out,omitempty"`
	Limited    bool   `json:"limited,omitempty"` // output passed Limit
	Killed     bool   `json:"killed,omitempty"`  // ended by Kill, timeout or limit
	// Survivors counts processes of the command still alive after the kill
	// (checked with a process listing). Non-zero means the agent could not
	// clean up: the container must not be reused.
	Survivors int    `json:"survivors,omitempty"`
	Error     string `json:"error,omitempty"` // the agent's own failure, if any

	// Signal ended the main process (0: it exited; Code is then its status).
	Signal int `json:"signal,omitempty"`
	// CPULimited: killed because CPUTimeMS was used up.
	CPULimited bool `json:"cpu_limited,omitempty"`
	// OOM: the kernel's OOM killer killed a process of the command.
	OOM bool `json:"oom,omitempty"`
	// What the command used: wall time, and the CPU time and largest
	// resident set of all its processes (those reparented to the agent
	// included), in microseconds and bytes.
	WallUS   int64 `json:"wall_us,omitempty"`
	UserUS   int64 `json:"user_us,omitempty"`
	SystemUS int64 `json:"system_us,omitempty"`
	MaxRSS   int64 `json:"max_rss,omitempty"`
}

// Kinds of file transfer, for PutMsg and GetMsg.
const (
	KindFile = "file" // one regular file
	KindTar  = "tar"  // a tar stream: unpacked into a directory, or packed from a path
)

// PutMsg writes into the container what the Stdin frames of its id carry.
type PutMsg struct {
	Kind string `json:"kind"`
	// Path: for a file, its absolute path (replaced whole: the data goes to
	// a temporary file that is renamed over it at the end); for a tar, the
	// directory to unpack into (made if missing).
	Path string `json:"path"`
	Mode uint32 `json:"mode,omitempty"` // a file's permission bits
}

// GetMsg reads from the container, as Stdout frames of its id.
type GetMsg struct {
	Kind string `json:"kind"`
	Path string `json:"path"` // absolute; for a tar, a file or a directory
	// Max bounds the content bytes (a file's, or the regular files' of a
	// tar together): past it the agent stops and reports TooLarge. -1: none.
	Max int64 `json:"max"`
}

// DoneMsg ends a Put or a Get.
type DoneMsg struct {
	Error string `json:"error,omitempty"`
	// Errno is the system error behind Error, when there is one (ENOENT,
	// EISDIR, ENOSPC, EACCES...), so that the pool can wrap it.
	Errno int `json:"errno,omitempty"`
	// TooLarge: the content passed Max (Get), Invalid: the input is not
	// acceptable (a tar that is not one, an entry that would land outside
	// the directory, a device node...).
	TooLarge bool `json:"too_large,omitempty"`
	Invalid  bool `json:"invalid,omitempty"`
	// Clean says that an unfinished Put left nothing half written: every
	// file is whole or absent.
	Clean bool  `json:"clean,omitempty"`
	Size  int64 `json:"size,omitempty"` // content bytes moved
}

// ResetMsg asks the agent to make the container clean for the next user.
type ResetMsg struct {
	EmptyDirs []string `json:"empty_dirs,omitempty"` // their contents are removed
	// Verify asks for the whole reset, checked afterwards: besides the
	// processes, the contents of every writable tmpfs and mqueue mount of
	// the container (from /proc/self/mountinfo; /dev itself, /proc and /sys
	// excepted), and every System V IPC object.
	Verify bool `json:"verify,omitempty"`
}

// ResetDoneMsg reports what a reset did.
type ResetDoneMsg struct {
	Killed    int    `json:"killed"`    // processes killed
	Survivors int    `json:"survivors"` // processes still alive after the kill
	Error     string `json:"error,omitempty"`
	// Left lists what a verified reset found still there afterwards (a file
	// it could not remove, an IPC object of another user...): the container
	// is not as good as new.
	Left []string `json:"left,omitempty"`
}

// Frame is one decoded frame.
type Frame struct {
	Type    Type
	ID      uint32
	Payload []byte
}

// ErrFrameTooLarge means a header announced more than MaxPayload bytes: the
// peer is not speaking this protocol.
var ErrFrameTooLarge = errors.New("agentproto: frame larger than MaxPayload")

// ErrUnknownType means a frame of a type this version does not know.
var ErrUnknownType = errors.New("agentproto: unknown frame type")

// Write writes one frame. It is not safe for concurrent use: callers
// serialize writes to a connection.
func Write(w io.Writer, t Type, id uint32, payload []byte) error {
	if len(payload) > MaxPayload {
		return ErrFrameTooLarge
	}
	var buf [HeaderSize]byte
	buf[0] = byte(t)
	binary.BigEndian.PutUint32(buf[1:5], id)
	binary.BigEndian.PutUint32(buf[5:9], uint32(len(payload)))
	if len(payload) == 0 {
		_, err := w.Write(buf[:])
		return err
	}
	// One Write per frame keeps frames whole on a shared connection.
	frame := make([]byte, 0, HeaderSize+len(payload))
	frame = append(append(frame, buf[:]...), payload...)
	_, err := w.Write(frame)
	return err
}

// Append appends one frame to b and returns the result, for a writer that
// sends several frames in one write (a small Put with its data and its
// end). The payload must not exceed MaxPayload.
func Append(b []byte, t Type, id uint32, payload []byte) []byte {
	var buf [HeaderSize]byte
	buf[0] = byte(t)
	binary.BigEndian.PutUint32(buf[1:5], id)
	binary.BigEndian.PutUint32(buf[5:9], uint32(len(payload)))
	return append(append(b, buf[:]...), payload...)
}

// WriteJSON writes a control frame.
func WriteJSON(w io.Writer, t Type, id uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("agentproto: encode %c: %w", t, err)
	}
	return Write(w, t, id, b)
}

// Read reads one frame. The payload is freshly allocated.
func Read(r io.Reader) (Frame, error) {
	return ReadWith(r, func(n int) []byte { return make([]byte, n) })
}

// ReadWith reads one frame into a payload buffer of length n that alloc
// returns, so that a reader can recycle buffers.
func ReadWith(r io.Reader, alloc func(n int) []byte) (Frame, error) {
	var buf [HeaderSize]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Type: Type(buf[0]), ID: binary.BigEndian.Uint32(buf[1:5])}
	if !f.Type.known() {
		return Frame{}, fmt.Errorf("%w: %q", ErrUnknownType, buf[0])
	}
	n := binary.BigEndian.Uint32(buf[5:9])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	if n > 0 {
		f.Payload = alloc(int(n))
		if _, err := io.ReadFull(r, f.Payload); err != nil {
			return Frame{}, fmt.Errorf("agentproto: read payload: %w", io.ErrUnexpectedEOF)
		}
	}
	return f, nil
}

// Decode unmarshals a control frame's payload.
func (f Frame) Decode(v any) error {
	if err := json.Unmarshal(f.Payload, v); err != nil {
		return fmt.Errorf("agentproto: decode %c frame: %w", f.Type, err)
	}
	return nil
}

func (t Type) known() bool {
	switch t {
	case Hello, Exec, Stdin, StdinEOF, Kill, Stdout, Stderr, Exit, Reset, ResetDone, Ping, Pong,
		Grant, Put, Get, Done, Term, Resize:
		return true
	}
	return false
}

// GrantPayload encodes a Grant frame's payload.
func GrantPayload(n int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	return b[:]
}

// GrantOf decodes a Grant frame's payload.
func GrantOf(f Frame) (int, error) {
	if len(f.Payload) != 4 {
		return 0, fmt.Errorf("agentproto: grant frame of %d bytes", len(f.Payload))
	}
	return int(binary.BigEndian.Uint32(f.Payload)), nil
}
