package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	tempfs "github.com/tempfs/tempfs/fs"
	"github.com/tempfs/tempfs/naming"
)

const (
	// defaultMktempTemplate is coreutils mktemp's default template, made in $TMPDIR or /tmp.
	defaultMktempTemplate = "tmp.XXXXXXXXXX"
	// minMktempX is the fewest trailing X coreutils mktemp accepts.
	minMktempX = 3
	// mktempAttempts is how many names are tried before giving up, as glibc's gen_tempname (62^3).
	mktempAttempts = 62 * 62 * 62
	// fuseSuperMagic is statfs's f_type for every FUSE filesystem.
	fuseSuperMagic = 0x65735546
	// tmpdirDefault is what --tmpdir holds when given without =DIR. A NUL cannot come from the command line.
	tmpdirDefault = "\x00"
)

// mktempOptions are coreutils mktemp's flags.
type mktempOptions struct {
	directory bool
	dryRun    bool
	quiet     bool
	suffix    string
	suffixSet bool // --suffix was given, even empty: the template must then end in X
	dir       destDir
	t         bool
}

// destDir is where -p DIR and --tmpdir[=DIR] put the directory; the last one given wins, as in coreutils.
type destDir struct {
	dir string // "" means $TMPDIR, else /tmp
	set bool
}

func (d *destDir) String() string { return d.dir }
func (d *destDir) Type() string   { return "DIR" }
func (d *destDir) Set(v string) error {
	if v == tmpdirDefault {
		v = ""
	}
	d.dir, d.set = v, true
	return nil
}

// AddFlags registers the flags. pflag has no short-only flags: -p and -t get long names, which the usage text
// (mktempUsage) leaves out as coreutils has none.
func (o *mktempOptions) AddFlags(fs *pflag.FlagSet) {
	fs.BoolVarP(&o.directory, "directory", "d", false, "create a directory, not a file")
	fs.BoolVarP(&o.dryRun, "dry-run", "u", false, "do not create anything; merely print a name (unsafe)")
	fs.BoolVarP(&o.quiet, "quiet", "q", false, "suppress diagnostics about file/dir-creation failure")
	fs.StringVar(&o.suffix, "suffix", "", "append SUFF to TEMPLATE")
	fs.Var(&o.dir, "tmpdir", "interpret TEMPLATE relative to DIR")
	fs.Lookup("tmpdir").NoOptDefVal = tmpdirDefault
	fs.VarP(&o.dir, "p", "p", "interpret TEMPLATE relative to DIR")
	fs.BoolVarP(&o.t, "t", "t", false, "interpret TEMPLATE as a single file name component relative to $TMPDIR")
}

// mktempFlagsHelp is the flags section of `tempfs mktemp --help`, in coreutils' words and layout.
const mktempFlagsHelp = `Flags:
  -d, --directory        create a directory, not a file
  -u, --dry-run          do not create anything; merely print a name (unsafe)
  -q, --quiet            suppress diagnostics about file/dir-creation failure
      --suffix=SUFF      append SUFF to TEMPLATE; SUFF must not contain a slash.
                           This option is implied if TEMPLATE does not end in X
  -p DIR, --tmpdir[=DIR] interpret TEMPLATE relative to DIR; if DIR is not
                           specified, use $TMPDIR if set, else /tmp. With
                           this option, TEMPLATE must not be an absolute name;
                           unlike with -t, TEMPLATE may contain slashes, but
                           mktemp creates only the final component
  -t                     interpret TEMPLATE as a single file name component,
                           relative to a directory: $TMPDIR, if set; else the
                           directory specified via -p; else /tmp [deprecated]
  -h, --help             help for mktemp
`

func newMktempCommand() *cobra.Command {
	o := &mktempOptions{}
	cmd := &cobra.Command{
		Use:   "mktemp [-d] [-u] [-q] [-p DIR] [-t] [--suffix=SUFF] [--tmpdir[=DIR]] [TEMPLATE]",
		Short: "Create a unique temporary file or directory and print its name (coreutils mktemp)",
		Long: `Create a temporary file or directory, safely, and print its name, as coreutils mktemp does
and with its flags. TEMPLATE must contain at least 3 consecutive 'X's in its last component;
they are replaced by random characters. If TEMPLATE is not given, tmp.XXXXXXXXXX is used in
$TMPDIR (else /tmp). Files are created 0600 and directories 0700 (less the umask), never over
an existing name. Exit status 1 on any failure, as coreutils.

The random characters come from tempfs's alphabet, a-z, 0-9 and _ (Python tempfile's), not
coreutils' A-Z, a-z, 0-9: a generated name never contains an X, so it is never a template.

On a tempfs mount the entry is made through the filesystem's own template (a run of at least
6 X; a shorter run is padded to 6), and a file is marked user.tempfs.lifetime=keep before it
is closed, so that it outlives the command like any file mktemp makes. On a mount with
--owner, the entry is handed to the owner of mktemp's parent (user.tempfs.owner=parent)
instead: it lives as long as the shell or program that called mktemp, not longer.`,
		Example: `  tempfs mktemp                            # /tmp/tmp.k3x_9qa0zb
  tempfs mktemp -d                         # a 0700 directory
  tempfs mktemp -p /scratch job.XXXXXX     # on a tempfs mount: kept until removed
  tempfs mktemp --suffix .json -t reportXXXX
  dir=$(tempfs mktemp -d) && trap 'rm -rf "$dir"' EXIT`,
		Args:                  cobra.ArbitraryArgs,
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.suffixSet = cmd.Flags().Changed("suffix")
			return runMktemp(o, args, os.Getenv, cmd.OutOrStdout())
		},
	}
	o.AddFlags(cmd.Flags())
	// coreutils mktemp exits 1 on bad usage too; scripts test for that status.
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: exitFailure, err: fmt.Errorf("%v (see '%s --help')", err, c.CommandPath())}
	})
	cmd.SetUsageFunc(func(c *cobra.Command) error {
		w := c.OutOrStderr()
		fmt.Fprintf(w, "Usage:\n  %s\n\nExamples:\n%s\n\n%s", c.UseLine(), c.Example, mktempFlagsHelp)
		return nil
	})
	return cmd
}

// mktempPlan is a validated request: name is the whole template path as coreutils forms it (DIR/TEMPLATE or
// TEMPLATE as given, so relative stays relative), of which the xLen characters before the last suffixLen are
// replaced.
type mktempPlan struct {
	name      string
	xLen      int
	suffixLen int
}

func (p mktempPlan) prefix() string { return p.name[:len(p.name)-p.suffixLen-p.xLen] }
func (p mktempPlan) suffix() string { return p.name[len(p.name)-p.suffixLen:] }

// padded is the plan with its run of X lengthened to naming.MinRun, as a tempfs template makes names.
func (p mktempPlan) padded() mktempPlan {
	if p.xLen >= naming.MinRun {
		return p
	}
	return mktempPlan{name: p.prefix() + strings.Repeat("X", naming.MinRun) + p.suffix(), xLen: naming.MinRun, suffixLen: p.suffixLen}
}

// candidate is the name with the run replaced by random characters.
func (p mktempPlan) candidate() string {
	return p.prefix() + naming.RandomString(p.xLen) + p.suffix()
}

// planMktemp checks the arguments as coreutils mktemp does, in its order and with its messages.
func planMktemp(o *mktempOptions, args []string, getenv func(string) string) (mktempPlan, error) {
	if len(args) > 1 {
		return mktempPlan{}, errors.New("too many templates")
	}
	template := defaultMktempTemplate
	useDestDir := o.dir.set || o.t
	if len(args) == 0 {
		useDestDir = true
	} else {
		template = args[0]
	}
	var suffixLen int
	if o.suffixSet {
		if !strings.HasSuffix(template, "X") {
			return mktempPlan{}, fmt.Errorf("with --suffix, template %s must end in X", quote(template))
		}
		template += o.suffix
		suffixLen = len(o.suffix)
	} else if i := strings.LastIndexByte(template, 'X'); i >= 0 {
		// Without --suffix, whatever follows the last X is the suffix.
		suffixLen = len(template) - i - 1
	}
	suffix := template[len(template)-suffixLen:]
	if suffixLen > 0 && lastComponent(suffix) != 0 {
		return mktempPlan{}, fmt.Errorf("invalid suffix %s, contains directory separator", quote(suffix))
	}
	xLen := trailingX(template[:len(template)-suffixLen])
	if xLen < minMktempX {
		return mktempPlan{}, fmt.Errorf("too few X's in template %s", quote(template))
	}
	if useDestDir {
		var dir string
		if o.t {
			// -t: $TMPDIR first, then -p, as coreutils' deprecated -t.
			switch env := getenv("TMPDIR"); {
			case env != "":
				dir = env
			case o.dir.dir != "":
				dir = o.dir.dir
			default:
				dir = "/tmp"
			}
			if lastComponent(template) != 0 {
				return mktempPlan{}, fmt.Errorf("invalid template, %s, contains directory separator", quote(template))
			}
		} else {
			switch env := getenv("TMPDIR"); {
			case o.dir.dir != "":
				dir = o.dir.dir
			case env != "":
				dir = env
			default:
				dir = "/tmp"
			}
			if strings.HasPrefix(template, "/") {
				return mktempPlan{}, fmt.Errorf("invalid template, %s; with --tmpdir, it may not be absolute", quote(template))
			}
		}
		template = fileNameConcat(dir, template)
	}
	return mktempPlan{name: template, xLen: xLen, suffixLen: suffixLen}, nil
}

// trailingX counts the X at the end of s.
func trailingX(s string) int {
	n := 0
	for n < len(s) && s[len(s)-1-n] == 'X' {
		n++
	}
	return n
}

// lastComponent is the index where the last component of name starts, as gnulib's last_component: leading
// slashes are skipped and trailing slashes belong to the last component.
func lastComponent(name string) int {
	i := 0
	for i < len(name) && name[i] == '/' {
		i++
	}
	base, sawSlash := i, false
	for ; i < len(name); i++ {
		if name[i] == '/' {
			sawSlash = true
		} else if sawSlash {
			base, sawSlash = i, false
		}
	}
	return base
}

// fileNameConcat joins dir and base as gnulib's file_name_concat, which coreutils mktemp prints: dir's trailing
// slashes are dropped, and one slash separates the two unless dir is a root.
func fileNameConcat(dir, base string) string {
	lc := lastComponent(dir)
	baseLen := len(strings.TrimRight(dir[lc:], "/"))
	dirLen := lc + baseLen
	sep := ""
	switch {
	case baseLen > 0:
		if dir[dirLen-1] != '/' && !strings.HasPrefix(base, "/") {
			sep = "/"
		}
	case strings.HasPrefix(base, "/"):
		sep = "."
	}
	return dir[:dirLen] + sep + base
}

// quote is how coreutils quotes a name in a message (in the C locale).
func quote(s string) string { return "'" + s + "'" }

func runMktemp(o *mktempOptions, args []string, getenv func(string) string, stdout io.Writer) error {
	plan, err := planMktemp(o, args, getenv)
	if err != nil {
		return &exitError{code: exitFailure, err: err}
	}
	name, err := makeTemp(o, plan)
	if err != nil {
		if o.quiet {
			return &exitError{code: exitFailure}
		}
		kind := "file"
		if o.directory {
			kind = "directory"
		}
		return &exitError{code: exitFailure, err: fmt.Errorf("failed to create %s via template %s: %w", kind, quote(plan.name), err)}
	}
	fmt.Fprintln(stdout, name)
	return nil
}

// makeTemp creates the entry (or, with -u, finds a free name) and returns the name to print.
func makeTemp(o *mktempOptions, p mktempPlan) (string, error) {
	if !o.dryRun && onTempfs(dirOf(p.prefix())) {
		tmpl, useTemplate, err := tempfsTemplate(p)
		if err != nil {
			return "", err
		}
		if useTemplate {
			if o.directory {
				return mkdirOnTempfs(p.prefix(), tmpl)
			}
			return createOnTempfs(p.prefix(), tmpl)
		}
	}
	if o.dryRun && onTempfs(dirOf(p.prefix())) {
		// The name a real creation would give: the run padded to naming.MinRun, as the mount's template makes it.
		if _, useTemplate, err := tempfsTemplate(p); err == nil && useTemplate {
			p = p.padded()
		}
	}
	return makeExclusive(o, p)
}

// makeExclusive is coreutils' way: draw names until one can be created exclusively (or, with -u, until one does
// not exist).
func makeExclusive(o *mktempOptions, p mktempPlan) (string, error) {
	for range mktempAttempts {
		name := p.candidate()
		var err error
		switch {
		case o.dryRun:
			var st unix.Stat_t
			err = unix.Lstat(name, &st)
			switch {
			case errors.Is(err, unix.ENOENT):
				return name, nil
			case err == nil, errors.Is(err, unix.EOVERFLOW):
				err = unix.EEXIST
			}
		case o.directory:
			if err = unix.Mkdir(name, 0o700); err == nil {
				return name, nil
			}
		default:
			var fd int
			if fd, err = unix.Open(name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600); err == nil {
				return name, unix.Close(fd)
			}
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", err
		}
	}
	return "", unix.EEXIST
}

// tempfsTemplate is the path that makes the entry through a tempfs template: the run padded to naming.MinRun X.
// useTemplate is false when the suffix would change the run (it starts with X) or leave the last component (it
// has a slash); the exclusive way then works on tempfs too. A prefix or suffix that holds a run of MinRun X
// would make every name a template there, so it is refused with EINVAL, as tempfs refuses it.
func tempfsTemplate(p mktempPlan) (tmpl string, useTemplate bool, err error) {
	prefix, suffix := p.prefix(), p.suffix()
	if strings.HasPrefix(suffix, "X") || strings.Contains(suffix, "/") {
		return "", false, nil
	}
	base := prefix[strings.LastIndexByte(prefix, '/')+1:]
	if naming.IsTemplate(base) || naming.IsTemplate(suffix) {
		return "", false, fmt.Errorf("%w: tempfs reads a name with another run of %d or more X as a template", syscall.EINVAL, naming.MinRun)
	}
	return prefix + strings.Repeat("X", max(p.xLen, naming.MinRun)) + suffix, true, nil
}

// dirOf is the directory the entry is made in: prefix up to its last slash, or ".".
func dirOf(prefix string) string {
	i := strings.LastIndexByte(prefix, '/')
	switch {
	case i < 0:
		return "."
	case i == 0:
		return "/"
	}
	return prefix[:i]
}

// onTempfs reports whether dir is on a tempfs mount: a FUSE filesystem whose entries answer user.tempfs.path.
// The root alone answers user.tempfs.stats, and mktemp -p MOUNT/sub must work too.
func onTempfs(dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != fuseSuperMagic {
		return false
	}
	_, err := unix.Getxattr(dir, tempfs.XattrPath, nil)
	return err == nil
}

// createOnTempfs opens the template with O_CREAT, learns the name tempfs drew from the open file, and persists
// the file before closing it: a template file would go at its last close. On a mount with owners it is handed
// to the owner of mktemp's parent instead (see keepForParent).
func createOnTempfs(prefix, tmpl string) (string, error) {
	fd, err := unix.Open(tmpl, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	path, err := fgetxattrString(fd, tempfs.XattrPath)
	if err != nil {
		return "", fmt.Errorf("reading the new file's name: %w", err)
	}
	if err := keepForParent(func(attr, value string) error { return unix.Fsetxattr(fd, attr, []byte(value), 0) }); err != nil {
		return "", fmt.Errorf("keeping the new file: %w", err)
	}
	return prefix[:strings.LastIndexByte(prefix, '/')+1] + filepath.Base(path), nil
}

// keepForParent makes a new entry outlive mktemp: on a mount with owners (--owner) it is handed to
// the owner of mktemp's parent, the shell that called it, which also ends a template file's close lifetime;
// elsewhere (no owners, or the entry has none) it is kept until removed.
func keepForParent(set func(attr, value string) error) error {
	if set(tempfs.XattrOwner, "parent") == nil {
		return nil
	}
	return set(tempfs.XattrLifetime, "keep")
}

// mkdirOnTempfs makes the directory from the template and asks its parent for the name this process got.
func mkdirOnTempfs(prefix, tmpl string) (string, error) {
	if err := unix.Mkdir(tmpl, 0o700); err != nil {
		return "", err
	}
	name, err := getxattrString(dirOf(prefix), tempfs.XattrCreated)
	if err != nil {
		return "", fmt.Errorf("reading the new directory's name: %w", err)
	}
	path := prefix[:strings.LastIndexByte(prefix, '/')+1] + name
	if err := keepForParent(func(attr, value string) error { return unix.Setxattr(path, attr, []byte(value), 0) }); err != nil {
		return "", fmt.Errorf("keeping the new directory: %w", err)
	}
	return path, nil
}

// getxattrString reads an xattr whose size may change between the size probe and the read.
func getxattrString(path, attr string) (string, error) {
	return readXattr(func(dest []byte) (int, error) { return unix.Getxattr(path, attr, dest) })
}

func fgetxattrString(fd int, attr string) (string, error) {
	return readXattr(func(dest []byte) (int, error) { return unix.Fgetxattr(fd, attr, dest) })
}

func readXattr(get func(dest []byte) (int, error)) (string, error) {
	for {
		n, err := get(nil)
		if err != nil {
			return "", err
		}
		buf := make([]byte, n+64)
		n, err = get(buf)
		if errors.Is(err, unix.ERANGE) {
			continue // it grew (the stats of a busy mount)
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
