package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Limits. A tool that runs longer than toolTimeout is killed and fails its
// test; the server gets serverStopTimeout to exit after SIGTERM.
const (
	toolTimeout        = 2 * time.Minute
	serverStartTimeout = 30 * time.Second
	serverStopTimeout  = 30 * time.Second
	serverLogKeepBytes = 4 << 20 // server log kept for assertions and failure output
)

// pythonPath is the interpreter that has python3-libnbd's nbd module; the
// python3 first on PATH may be another one (pyenv).
const pythonPath = "/usr/bin/python3"

// toolPackage names the Debian package of each external tool, for the
// failure message when it is missing.
var toolPackage = map[string]string{
	"nbdinfo":            "libnbd-bin",
	"nbdcopy":            "libnbd-bin",
	pythonPath:           "python3 python3-libnbd",
	"qemu-io":            "qemu-utils",
	"qemu-img":           "qemu-utils",
	"qemu-nbd":           "qemu-utils",
	"fio":                "fio",
	"openssl":            "openssl",
	"qemu-system-x86_64": "qemu-system-x86",
	"cpio":               "cpio",
	"xz":                 "xz-utils",
	"sha256sum":          "coreutils",
}

// need fails the test unless every tool is installed, naming the apt-get
// command that installs the missing ones.
func need(t *testing.T, tools ...string) {
	t.Helper()
	var missing, pkgs []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
			pkgs = append(pkgs, toolPackage[tool])
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s not installed; install with: apt-get install -y %s", strings.Join(missing, ", "), strings.Join(pkgs, " "))
	}
}

// needPythonNBD fails the test unless /usr/bin/python3 can import libnbd's
// Python binding (what nbdsh runs on).
func needPythonNBD(t *testing.T) {
	t.Helper()
	need(t, pythonPath)
	if out, err := exec.Command(pythonPath, "-c", "import nbd").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import nbd (%v: %s); install with: apt-get install -y python3-libnbd", pythonPath, err, bytes.TrimSpace(out))
	}
}

// repoRoot is the module root, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

// shaleBinary builds cmd/shale once per test process and returns its path.
func shaleBinary(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		// Opening the sources from the test records them in the test log,
		// so `go test` caching notices when the server changes (the build
		// below runs in a child process the cache cannot see).
		touchSources(root)
		binDir, buildErr = os.MkdirTemp("", "shale-e2e-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "shale")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/shale")
		cmd := exec.Command("go", args...) // go test puts $GOROOT/bin first on PATH
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building shale: %v", buildErr)
	}
	return binPath
}

func touchSources(root string) {
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		name := d.Name()
		if strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go") || name == "go.mod" || name == "go.sum" {
			if f, err := os.Open(path); err == nil {
				f.Close()
			}
		}
		return nil
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// server is one running shale process.
type server struct {
	t    *testing.T
	cmd  *exec.Cmd
	dir  string // the test's directory: config, certificates, files
	addr string // TCP host:port
	port int

	mu  sync.Mutex
	log bytes.Buffer // stderr, bounded by serverLogKeepBytes

	exited  chan struct{}
	waitErr error
	stopped bool
}

var listenRE = regexp.MustCompile(`msg="shale listening" network=tcp addr=(\S+)`)

// startServer writes a configuration (listen on a free loopback port,
// text logs at info level, then extra, which must define volumes) and
// starts shale serve with it. The server is stopped, and its exit checked,
// when the test ends.
func startServer(t *testing.T, extra string) *server {
	t.Helper()
	bin := shaleBinary(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf("listen: 127.0.0.1:0\ndata_dir: %s\nlog: {level: info, format: text}\n%s\n",
		filepath.Join(dir, "data"), extra)
	cfgPath := filepath.Join(dir, "shale.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return startServerConfig(t, bin, dir, cfgPath)
}

func startServerConfig(t *testing.T, bin, dir, cfgPath string) *server {
	t.Helper()
	s := &server{t: t, dir: dir, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, "serve", "--config", cfgPath, "--shutdown-timeout", "10s")
	s.cmd.Dir = dir
	s.cmd.Env = serverEnv()
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			if s.log.Len() < serverLogKeepBytes {
				s.log.WriteString(line)
				s.log.WriteByte('\n')
			}
			s.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.stop)
	select {
	case s.addr = <-addrc:
	case <-s.exited:
		t.Fatalf("shale exited before listening: %v\n%s", s.waitErr, s.Log())
	case <-time.After(serverStartTimeout):
		t.Fatalf("shale did not log a TCP listening line within %v\n%s", serverStartTimeout, s.Log())
	}
	i := strings.LastIndexByte(s.addr, ':')
	s.port, err = strconv.Atoi(s.addr[i+1:])
	if err != nil {
		t.Fatalf("listening address %q: %v", s.addr, err)
	}
	return s
}

// serverEnv is this process's environment without SHALE_* variables, so a
// developer's settings cannot leak into the server's configuration.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SHALE_") {
			env = append(env, kv)
		}
	}
	return env
}

// URI is the nbd:// URI of export on the server's TCP address.
func (s *server) URI(export string) string { return "nbd://" + s.addr + "/" + export }

// Log returns the server's stderr so far.
func (s *server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// count returns how many log lines contain substr.
func (s *server) count(substr string) int {
	n := 0
	for _, line := range strings.Split(s.Log(), "\n") {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

// countAtLeast waits up to 5 s for at least n log lines containing
// substr (the log is read asynchronously) and returns the count.
func (s *server) countAtLeast(substr string, n int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := s.count(substr)
		if c >= n || time.Now().After(deadline) {
			return c
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// idle waits up to 5 s until every connection the server logged as open
// has been logged as closed, and returns how many were opened.
func (s *server) idle() int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		opened, closed := s.count(`msg="nbd connection open"`), s.count(`msg="nbd connection closed"`)
		if opened == closed || time.Now().After(deadline) {
			return opened
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and checks that the server exits 0 in time and that
// the race detector (if on) reported nothing. It runs once, at cleanup or
// earlier when a test calls it.
func (s *server) stop() {
	t := s.t
	if s.stopped {
		return
	}
	s.stopped = true
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(serverStopTimeout):
		s.cmd.Process.Kill()
		<-s.exited
		t.Errorf("shale did not exit within %v of SIGTERM", serverStopTimeout)
	}
	log := s.Log()
	if s.waitErr != nil {
		t.Errorf("shale exited with %v after SIGTERM", s.waitErr)
	}
	if strings.Contains(log, "DATA RACE") {
		t.Errorf("the race detector reported a data race in shale")
	}
	if strings.Contains(log, "panic:") {
		t.Errorf("shale panicked")
	}
	if t.Failed() {
		t.Logf("shale log (%s):\n%s", s.dir, tail(log, 200))
	}
}

// tail returns the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// result is what an external command did.
type result struct {
	stdout, stderr string
	err            error
}

func (r result) String() string {
	return fmt.Sprintf("exit: %v\nstdout:\n%s\nstderr:\n%s", r.err, tail(r.stdout, 60), tail(r.stderr, 60))
}

// execTool runs name with args under toolTimeout.
func execTool(name string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %v: %w", toolTimeout, err)
	}
	return result{stdout.String(), stderr.String(), err}
}

// run runs a tool that must succeed and returns its stdout.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := execTool(name, args...)
	if r.err != nil {
		t.Fatalf("%s %s failed\n%s", name, quoteArgs(args), r)
	}
	return r.stdout
}

// runFail runs a tool that must fail and returns what it printed.
func runFail(t *testing.T, name string, args ...string) result {
	t.Helper()
	r := execTool(name, args...)
	if r.err == nil {
		t.Fatalf("%s %s succeeded; it should have failed\n%s", name, quoteArgs(args), r)
	}
	var ee *exec.ExitError
	if !errors.As(r.err, &ee) {
		t.Fatalf("%s %s did not run: %v", name, quoteArgs(args), r.err)
	}
	return r
}

// python runs testdata/script with libnbd's Python binding; the script
// must exit 0 and print PASS as its last line.
func python(t *testing.T, script string, args ...string) string {
	t.Helper()
	needPythonNBD(t)
	path, err := filepath.Abs(filepath.Join("testdata", script))
	if err != nil {
		t.Fatal(err)
	}
	r := execTool(pythonPath, append([]string{path}, args...)...)
	out := strings.TrimRight(r.stdout, "\n")
	if r.err != nil || !strings.HasSuffix(out, "PASS") {
		t.Fatalf("%s %s failed\n%s", script, quoteArgs(args), r)
	}
	return r.stdout
}

func quoteArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$&;|<>(){}[]*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}

func itoa(n int) string { return strconv.Itoa(n) }
