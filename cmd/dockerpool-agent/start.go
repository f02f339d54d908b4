package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// defaultPath is Docker's PATH, used when neither the agent's environment nor
// the exec's has one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// pipes are the command's standard streams. The agent keeps the R ends of
// stdout and stderr and the W end of stdin; the child gets the others.
type pipes struct {
	outR, outW *os.File
	errR, errW *os.File
	inR, inW   *os.File // nil without stdin
}

func newPipes(stdin bool) (*pipes, error) {
	p := &pipes{}
	var err error
	if p.outR, p.outW, err = os.Pipe(); err != nil {
		return p, err
	}
	if p.errR, p.errW, err = os.Pipe(); err != nil {
		return p, err
	}
	if stdin {
		if p.inR, p.inW, err = os.Pipe(); err != nil {
			return p, err
		}
	}
	return p, nil
}

func (p *pipes) closeChildEnds() {
	for _, f := range []*os.File{p.outW, p.errW, p.inR} {
		if f != nil {
			f.Close()
		}
	}
}

func (p *pipes) closeAll() {
	if p == nil {
		return
	}
	p.closeChildEnds()
	for _, f := range []*os.File{p.outR, p.errR, p.inW} {
		if f != nil {
			f.Close()
		}
	}
}

// startError is a command that could not start. With code 126 or 127 it is
// the command's fault (not executable, not found): the message goes to the
// command's stderr, as Docker does. With code -1 it is the agent's (or the
// container's): the message goes in ExitMsg.Error.
type startError struct {
	code int
	msg  string
}

// report sends what a start failure shows of itself and returns the Exit.
func (s *startError) report(e *execution) agentproto.ExitMsg {
	if s.code == -1 {
		return agentproto.ExitMsg{Code: -1, Error: s.msg}
	}
	if e.tty != nil { // a terminal has one output, with a terminal's line ends
		e.a.out.frame(agentproto.Stdout, e.id, []byte(s.msg+"\r\n"))
		return agentproto.ExitMsg{Code: s.code, StartError: s.msg}
	}
	e.a.out.frame(agentproto.Stderr, e.id, []byte(s.msg+"\n"))
	return agentproto.ExitMsg{Code: s.code, StartError: s.msg}
}

// prepare builds the command of an Exec: path lookup, user, working
// directory, environment and pipes.
func (e *execution) prepare() (*exec.Cmd, *pipes, *startError) {
	m := e.msg
	if len(m.Argv) == 0 || m.Argv[0] == "" {
		return nil, nil, &startError{code: -1, msg: "empty command"}
	}
	path, err := lookPath(m.Argv[0], searchPath(m.Env))
	if err != nil {
		return nil, nil, &startError{code: 127, msg: err.Error()}
	}
	u, err := lookupUser(m.User)
	if err != nil {
		// Docker fails such an exec with 126 and the message.
		return nil, nil, &startError{code: 126, msg: err.Error()}
	}
	if m.Dir != "" {
		// Checked here, as the agent, because a failed chdir in the child
		// cannot be told from a failed exec.
		if st, err := os.Stat(m.Dir); err != nil {
			code := 126
			if errors.Is(err, os.ErrNotExist) {
				code = 127
			}
			return nil, nil, &startError{code: code, msg: fmt.Sprintf("chdir to %q: %v", m.Dir, errors.Unwrap(err))}
		} else if !st.IsDir() {
			return nil, nil, &startError{code: 126, msg: fmt.Sprintf("chdir to %q: not a directory", m.Dir)}
		}
	}
	env := os.Environ()
	if u.home != "" && !hasVar(m.Env, "HOME") {
		env = append(env, "HOME="+u.home)
	}
	if e.tty != nil && !hasVar(env, "TERM") && !hasVar(m.Env, "TERM") {
		env = append(env, "TERM=xterm") // as Docker sets it for an exec with a TTY
	}
	env = append(env, m.Env...)
	env = append(env, execIDEnv+"="+e.token) // last: it wins over a duplicate

	if e.tty != nil {
		return e.tty.command(path, m, env, u.cred)
	}
	p, err := newPipes(m.Stdin)
	if err != nil {
		return nil, p, &startError{code: -1, msg: fmt.Sprintf("pipes: %v", err)}
	}
	argv0, args := path, m.Argv
	if m.MaxFileSize > 0 || m.MaxOpenFiles > 0 {
		// Limits must hold before the command's first instruction, for
		// every process it starts: the agent itself, re-executed as a
		// launcher, lowers them (soft and hard) and then executes the
		// command. (prlimit from here would come too late, and needs
		// CAP_SYS_RESOURCE for a command of another user.)
		if serr := checkLimits(m); serr != nil {
			return nil, nil, serr
		}
		argv0 = selfPath
		args = append([]string{"dockerpool-agent", launchArg, strconv.FormatInt(m.MaxFileSize, 10), strconv.Itoa(m.MaxOpenFiles), path}, m.Argv...)
	}
	cmd := &exec.Cmd{
		Path:        argv0,
		Args:        args,
		Env:         env,
		Dir:         m.Dir,
		Stdout:      p.outW,
		Stderr:      p.errW,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Credential: u.cred},
	}
	if p.inR != nil {
		cmd.Stdin = p.inR
	} // else os/exec opens /dev/null
	return cmd, p, nil
}

// searchPath is the PATH the command is looked up in: the exec's own if it
// sets one, else the agent's, else Docker's default.
func searchPath(env []string) string {
	path, ok := os.LookupEnv("PATH")
	for _, kv := range env {
		if v, found := strings.CutPrefix(kv, "PATH="); found {
			path, ok = v, true
		}
	}
	if !ok {
		return defaultPath
	}
	return path
}

func hasVar(env []string, name string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, name+"=") {
			return true
		}
	}
	return false
}

// lookPath finds file in path like exec.LookPath: a name with a slash is used
// as is; otherwise the first regular file with an execute bit in a directory
// of path. Relative directories of path are skipped: a command is never
// taken from the working directory by accident.
func lookPath(file, path string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}

// classifyStartError maps a failed start to 127 (not found), 126 (not
// executable) or -1 (the agent could not switch user, or ran out of
// something).
func classifyStartError(name string, err error, switchUser bool, user string) *startError {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return &startError{code: -1, msg: fmt.Sprintf("start %q: %v", name, err)}
	}
	msg := fmt.Sprintf("exec: %q: %v", name, errno)
	switch errno {
	case syscall.ENOENT, syscall.ENOTDIR, syscall.ELOOP, syscall.ENAMETOOLONG:
		return &startError{code: 127, msg: msg}
	case syscall.EPERM:
		if switchUser {
			// setgroups/setgid/setuid in the child: the agent lacks
			// CAP_SETUID/CAP_SETGID.
			return &startError{code: -1, msg: fmt.Sprintf("switch to user %q: %v", user, errno)}
		}
		return &startError{code: 126, msg: msg}
	case syscall.EACCES, syscall.ENOEXEC, syscall.EISDIR, syscall.ETXTBSY:
		return &startError{code: 126, msg: msg}
	}
	return &startError{code: -1, msg: fmt.Sprintf("start %q: %v", name, errno)}
}
