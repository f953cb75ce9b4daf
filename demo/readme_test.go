package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// repoRoot is where the test finds README.md and the files it names.
const repoRoot = ".."

// ciLinks says how CI comes to run each file a README marker may name:
// every link's file must contain the text, and must itself be run by CI.
// .ci/run is CI's entry point.
var ciLinks = map[string][]struct{ file, contains string }{
	".ci/run":            nil,
	"Makefile":           {{".ci/run", "make test"}},
	"mk/demo.mk":         {{"Makefile", "include mk/demo.mk"}, {".ci/run", "make demo"}},
	"demo/run.sh":        {{"mk/demo.mk", "demo/run.sh"}},
	"demo/guest/demo.sh": {{"demo/run.sh", "VM_EXTRA=demo/guest"}, {"demo/run.sh", "VM_CMD=./demo.sh"}},
}

// Fence languages: which hold commands, and which hold none.
var (
	commandLangs = []string{"sh", "bash", "shell", "console"}
	unitLangs    = []string{"ini"}
	quietLangs   = []string{"text", "go", "yaml", "json", "proto"}
)

var markerRE = regexp.MustCompile(`^<!--\s*exercised by:\s*(.+?)\s*-->$`)

// block is one fenced block of the README.
type block struct {
	line   int // of the opening fence, from 1
	lang   string
	body   []string
	marker []string // files the marker names; nil without a marker
}

func parseBlocks(text string) ([]block, error) {
	lines := strings.Split(text, "\n")
	var blocks []block
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "```") {
			continue
		}
		b := block{line: i + 1, lang: strings.TrimSpace(strings.TrimPrefix(l, "```"))}
		for j := i - 1; j >= 0; j-- {
			prev := strings.TrimSpace(lines[j])
			if prev == "" {
				continue
			}
			if m := markerRE.FindStringSubmatch(prev); m != nil {
				b.marker = strings.Fields(m[1])
			}
			break
		}
		j := i + 1
		for ; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
			b.body = append(b.body, lines[j])
		}
		if j == len(lines) {
			return nil, fmt.Errorf("line %d: the block is not closed", b.line)
		}
		blocks = append(blocks, b)
		i = j
	}
	return blocks, nil
}

// commands returns a block's commands: its lines joined at trailing
// backslashes, without comments and blank lines; for a unit, the
// ExecStart lines.
func (b block) commands() []string {
	var cmds []string
	cur := ""
	for _, l := range b.body {
		l = strings.TrimSpace(l)
		if slices.Contains(unitLangs, b.lang) {
			if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
				cmds = append(cmds, rest)
			}
			continue
		}
		if more, ok := strings.CutSuffix(l, `\`); ok {
			cur += more + " "
			continue
		}
		l = cur + l
		cur = ""
		if l = stripComment(l); l != "" {
			cmds = append(cmds, strings.Join(strings.Fields(l), " "))
		}
	}
	return cmds
}

// stripComment removes an unquoted " #..." comment and surrounding space.
func stripComment(l string) string {
	var quote rune
	for i, r := range l {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '#' && (i == 0 || l[i-1] == ' ' || l[i-1] == '\t'):
			return strings.TrimSpace(l[:i])
		}
	}
	return strings.TrimSpace(l)
}

// tokens splits a shell command into words the way the shell would, minus
// expansion: quotes group and are removed, and the opening "$(" of a
// command substitution and a closing parenthesis at the end of a word end
// words of their own.
func tokens(s string) []string {
	var (
		out   []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	flush := func() {
		if !in {
			return
		}
		w := cur.String()
		// A command substitution's first word is a word of its own.
		if i := strings.Index(w, "$("); i >= 0 && !strings.Contains(w[i:], ")") && i+2 < len(w) {
			out = append(out, w[:i+2])
			w = w[i+2:]
		}
		var tail []string
		for strings.HasSuffix(w, ")") && !strings.Contains(w, "(") {
			w = strings.TrimSuffix(w, ")")
			tail = append(tail, ")")
		}
		if w != "" {
			out = append(out, w)
		}
		out = append(out, tail...)
		cur.Reset()
		in = false
	}
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			flush()
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	flush()
	return out
}

// fileCommands returns a file's logical lines (continuations joined) as
// words, without comments, with make's own spelling of make undone.
func fileCommands(text string) [][]string {
	var out [][]string
	cur := ""
	for _, l := range strings.Split(text, "\n") {
		if more, ok := strings.CutSuffix(strings.TrimRight(l, " \t"), `\`); ok {
			cur += more + " "
			continue
		}
		l = cur + l
		cur = ""
		var words []string
		for _, w := range tokens(l) {
			if strings.HasPrefix(w, "#") {
				break // a comment runs nothing
			}
			switch w {
			case "$(MAKE)":
				w = "make"
			case "--no-print-directory":
				continue
			}
			words = append(words, w)
		}
		if len(words) > 0 {
			out = append(out, words)
		}
	}
	return out
}

var shellVar = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)

// wordMatches reports whether the README's word is the file's word, where
// a shell variable in the file's word stands for any one word.
func wordMatches(file, readme string) bool {
	if file == readme {
		return true
	}
	if !shellVar.MatchString(file) {
		return false
	}
	parts := shellVar.Split(file, -1)
	for i := range parts {
		parts[i] = regexp.QuoteMeta(parts[i])
	}
	return regexp.MustCompile(`^` + strings.Join(parts, `\S+`) + `$`).MatchString(readme)
}

// endsCommand reports whether a word ends the command before it.
func endsCommand(w string) bool {
	for _, p := range []string{">", "<", "2>", "&", "|", ";", ")"} {
		if strings.HasPrefix(w, p) {
			return true
		}
	}
	return false
}

// exercises reports whether the file's line runs the README's command.
func exercises(line, cmd []string) bool {
	if len(cmd) == 0 {
		return false
	}
	for i := 0; i+len(cmd) <= len(line); i++ {
		ok := true
		for k, w := range cmd {
			f := line[i+k]
			if k == 0 && filepath.Base(f) == filepath.Base(w) {
				continue // the program, by path or by name
			}
			if !wordMatches(f, w) {
				ok = false
				break
			}
		}
		end := i + len(cmd)
		if ok && (end == len(line) || endsCommand(line[end])) {
			return true
		}
	}
	return false
}

// commandWords is a README command as words, without a trailing "&".
func commandWords(cmd string) []string {
	w := tokens(cmd)
	if len(w) > 0 && w[len(w)-1] == "&" {
		w = w[:len(w)-1]
	}
	return w
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestReadmeCommands: every command README.md shows is run by a file that
// CI runs.
func TestReadmeCommands(t *testing.T) {
	blocks, err := parseBlocks(readFile(t, "README.md"))
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	checked := 0
	for _, b := range blocks {
		where := fmt.Sprintf("README.md:%d (```%s)", b.line, b.lang)
		switch {
		case slices.Contains(commandLangs, b.lang) || slices.Contains(unitLangs, b.lang):
		case slices.Contains(quietLangs, b.lang):
			continue
		case b.lang == "":
			t.Errorf("%s: a fence needs a language: sh for commands, text for output", where)
			continue
		default:
			t.Errorf("%s: unknown fence language %q; commands are ```sh, output ```text", where, b.lang)
			continue
		}
		if b.marker == nil {
			t.Errorf("%s: no <!-- exercised by: FILE... --> marker before the block", where)
			continue
		}
		var files [][][]string
		for _, f := range b.marker {
			if _, ok := ciLinks[f]; !ok {
				t.Errorf("%s: the marker names %s, which CI does not run (known: %v)", where, f, knownFiles())
				continue
			}
			files = append(files, fileCommands(readFile(t, f)))
		}
		for _, cmd := range b.commands() {
			checked++
			found := false
			for _, lines := range files {
				for _, l := range lines {
					found = found || exercises(l, commandWords(cmd))
				}
			}
			if !found {
				t.Errorf("%s: %q is not run by %s", where, cmd, strings.Join(b.marker, " or "))
			}
		}
	}
	if checked == 0 {
		t.Errorf("README.md shows no commands to check")
	}
	t.Logf("%d README commands checked", checked)
}

func knownFiles() []string {
	var names []string
	for f := range ciLinks {
		names = append(names, f)
	}
	slices.Sort(names)
	return names
}

// TestCIRunsTheFiles: each file a marker may name is run by CI, link by
// link from .ci/run.
func TestCIRunsTheFiles(t *testing.T) {
	for _, f := range knownFiles() {
		for _, l := range ciLinks[f] {
			if _, ok := ciLinks[l.file]; !ok {
				t.Errorf("%s is run by %s, which is not run by CI", f, l.file)
			}
			if !strings.Contains(readFile(t, l.file), l.contains) {
				t.Errorf("%s does not contain %q, so CI does not run %s", l.file, l.contains, f)
			}
		}
	}
}

// TestExercises pins down what counts as a file running a command.
func TestExercises(t *testing.T) {
	tests := []struct {
		file, cmd string
		want      bool
	}{
		{"make test", "make test", true},
		{"\t@$(TIMED) vmtest $(MAKE) --no-print-directory vmtest", "make vmtest", true},
		{`run ip netns add "$ns" || die "ip netns add $ns"`, "ip netns add red", true},
		{`out=$(run ip netns exec "$ns" nsbrokerctl --local echo "hello from $ns")`, `ip netns exec red nsbrokerctl --local echo "hello from red"`, true},
		{`timeout 20 /sbin/ip netns exec "$ns" nsbrokerctl --local subscribe --group 2 >"/tmp/$ns.sub" 2>&1 &`, "ip netns exec red nsbrokerctl --local subscribe --group 2 &", true},
		{"nsbrokerd 2>/tmp/nsbrokerd.log &", "/usr/local/bin/nsbrokerd", true},
		{"A=1 make vmtest VM_PKGS= VM_CMD=./demo.sh || rc=$?", "make vmtest VM_PKGS= VM_CMD=./demo.sh", true},
		{"out=$(ip netns exec red nsbrokerctl echo hello 2>&1)", "ip netns exec red nsbrokerctl echo hello", true},
		// Another command, other flags, flags dropped or added: no.
		{"make test", "make demo", false},
		{"nsbrokerd --log-level warn &", "nsbrokerd", false},
		{"nsbrokerd &", "nsbrokerd --discover", false},
		{`run ip netns add "$ns"`, "ip netns add red blue", false},
		{`ip netns exec "$ns" nsbrokerctl --local echo "hello from $ns"`, "ip netns exec red nsbrokerctl --local echo hello", false},
		{`show "nsbrokerd &"`, "nsbrokerd", false},
		{"# nsbroker-isolation-check", "nsbroker-isolation-check", false},
	}
	for _, tt := range tests {
		var got bool
		for _, l := range fileCommands(tt.file) {
			got = got || exercises(l, commandWords(tt.cmd))
		}
		if got != tt.want {
			t.Errorf("file line %q runs %q: got %v, want %v", tt.file, tt.cmd, got, tt.want)
		}
	}
}

func TestParseBlocks(t *testing.T) {
	text := "intro\n<!-- exercised by: demo/run.sh .ci/run -->\n\n```sh\nmake demo   # the demo\n\n# a comment\nmake \\\n  test\n```\n```text\nout\n```\n"
	blocks, err := parseBlocks(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 {
		t.Fatalf("%d blocks, want 2", len(blocks))
	}
	b := blocks[0]
	if b.line != 4 || b.lang != "sh" || !slices.Equal(b.marker, []string{"demo/run.sh", ".ci/run"}) {
		t.Errorf("block at line %d, lang %q, marker %q; want 4, sh, [demo/run.sh .ci/run]", b.line, b.lang, b.marker)
	}
	if got, want := b.commands(), []string{"make demo", "make test"}; !slices.Equal(got, want) {
		t.Errorf("commands %q, want %q", got, want)
	}
	if blocks[1].marker != nil {
		t.Errorf("the text block took the marker %q", blocks[1].marker)
	}
	if _, err := parseBlocks("```sh\nmake\n"); err == nil {
		t.Errorf("an unclosed block parsed")
	}
}
