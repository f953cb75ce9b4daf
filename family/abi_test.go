package family

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// headerPath is the uapi header, the single source of truth for the ABI.
var headerPath = filepath.Join("..", "kmod", "include", "uapi", "linux", "nsbroker.h")

// cSymbols are what the header uses but takes from other headers.
var cSymbols = map[string]int64{"NLMSG_MIN_TYPE": 0x10}

var (
	blockComment = regexp.MustCompile(`(?s)/\*.*?\*/`)
	defineLine   = regexp.MustCompile(`^#define\s+(\w+)(?:\s+(.+))?$`)
	enumStart    = regexp.MustCompile(`^enum\s+\w+\s*\{$`)
	enumMember   = regexp.MustCompile(`^(\w+)\s*(?:=\s*([^,]+?))?\s*,?$`)
	structStart  = regexp.MustCompile(`^struct\s+(\w+)\s*\{$`)
	structMember = regexp.MustCompile(`^(\w+)\s+(\w+);$`)
	cNameRef     = regexp.MustCompile(`\b(NSB_[A-Z0-9_]+|NETLINK_NSBROKER)\b`)
)

// cHeader is what parseHeader reads from the uapi header.
type cHeader struct {
	// consts maps every #define with a value and every enum member to its
	// value, with C's rules: enum members count up from the previous one.
	consts map[string]int64
	// structs maps a struct name to its members as "type name".
	structs map[string][]string
}

// parseHeader reads the subset of C the uapi header uses and fails on any
// line it does not understand inside an enum or struct, or a #define it
// cannot evaluate, so that a new construct cannot slip past the check.
func parseHeader(src string) (*cHeader, error) {
	h := &cHeader{consts: map[string]int64{}, structs: map[string][]string{}}
	var (
		inEnum     bool
		next       int64
		structName string
	)
	for i, line := range strings.Split(blockComment.ReplaceAllString(src, ""), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case inEnum && line == "};":
			inEnum = false
		case inEnum:
			m := enumMember.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("line %d: enum member %q not understood", i+1, line)
			}
			if m[2] != "" {
				v, err := h.eval(m[2])
				if err != nil {
					return nil, fmt.Errorf("line %d: %w", i+1, err)
				}
				next = v
			}
			h.consts[m[1]] = next
			next++
		case structName != "" && line == "};":
			structName = ""
		case structName != "":
			m := structMember.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("line %d: struct member %q not understood", i+1, line)
			}
			h.structs[structName] = append(h.structs[structName], m[1]+" "+m[2])
		case enumStart.MatchString(line):
			inEnum, next = true, 0
		case structStart.MatchString(line):
			structName = structStart.FindStringSubmatch(line)[1]
		case strings.HasPrefix(line, "#define"):
			m := defineLine.FindStringSubmatch(line)
			if m == nil {
				return nil, fmt.Errorf("line %d: #define %q not understood", i+1, line)
			}
			if m[2] == "" {
				continue // include guard
			}
			v, err := h.eval(m[2])
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", i+1, err)
			}
			h.consts[m[1]] = v
		}
	}
	if inEnum || structName != "" {
		return nil, fmt.Errorf("unterminated enum or struct")
	}
	return h, nil
}

var symbolOffset = regexp.MustCompile(`^(\w+)\s*([-+])\s*(\d+)$`)

// eval evaluates a number, a known symbol, or a symbol plus or minus a
// number, in parentheses or not.
func (h *cHeader) eval(expr string) (int64, error) {
	expr = strings.TrimSpace(expr)
	for strings.HasPrefix(expr, "(") && strings.HasSuffix(expr, ")") {
		expr = strings.TrimSpace(expr[1 : len(expr)-1])
	}
	if v, err := strconv.ParseInt(expr, 0, 64); err == nil {
		return v, nil
	}
	if v, ok := h.symbol(expr); ok {
		return v, nil
	}
	if m := symbolOffset.FindStringSubmatch(expr); m != nil {
		if v, ok := h.symbol(m[1]); ok {
			n, _ := strconv.ParseInt(m[3], 10, 64)
			if m[2] == "-" {
				n = -n
			}
			return v + n, nil
		}
	}
	return 0, fmt.Errorf("cannot evaluate %q", expr)
}

func (h *cHeader) symbol(name string) (int64, bool) {
	if v, ok := h.consts[name]; ok {
		return v, true
	}
	v, ok := cSymbols[name]
	return v, ok
}

// goMirror is a constant of abi.go and the C constant its comment names.
type goMirror struct {
	goName string
	value  int64
}

// parseMirrors type-checks a Go file of constants and returns, by C name,
// every constant whose comment names a C constant (the first one named).
func parseMirrors(path string) (map[string]goMirror, []string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
	if err != nil {
		return nil, nil, err
	}
	info := &types.Info{Defs: map[*ast.Ident]types.Object{}}
	if _, err := (&types.Config{}).Check("family", fset, []*ast.File{f}, info); err != nil {
		return nil, nil, err
	}
	mirrors := map[string]goMirror{}
	var problems []string
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, spec := range gd.Specs {
			vs := spec.(*ast.ValueSpec)
			text := vs.Doc.Text() + vs.Comment.Text()
			for _, id := range vs.Names {
				cName := cNameRef.FindString(text)
				if cName == "" {
					problems = append(problems, fmt.Sprintf("%s: comment names no C constant", id.Name))
					continue
				}
				v, ok := constant.Int64Val(info.Defs[id].(*types.Const).Val())
				if !ok {
					problems = append(problems, fmt.Sprintf("%s: not an integer", id.Name))
					continue
				}
				if prev, dup := mirrors[cName]; dup {
					problems = append(problems, fmt.Sprintf("%s and %s both mirror %s", prev.goName, id.Name, cName))
				}
				mirrors[cName] = goMirror{goName: id.Name, value: v}
			}
		}
	}
	return mirrors, problems, nil
}

// diffABI lists every difference between the header's constants and their
// Go mirrors. Names starting with "__" are the header's enum terminators,
// which only serve to define the *_MAX constants.
func diffABI(c map[string]int64, mirrors map[string]goMirror) []string {
	var problems []string
	for name, want := range c {
		if strings.HasPrefix(name, "__") {
			continue
		}
		m, ok := mirrors[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s = %d has no Go mirror in abi.go", name, want))
		case m.value != want:
			problems = append(problems, fmt.Sprintf("%s mirrors %s: want %d, got %d", m.goName, name, want, m.value))
		}
	}
	for name, m := range mirrors {
		if _, ok := c[name]; !ok {
			problems = append(problems, fmt.Sprintf("%s mirrors %s, which the header does not define", m.goName, name))
		}
	}
	sort.Strings(problems)
	return problems
}

func readHeader(t *testing.T) *cHeader {
	t.Helper()
	src, err := os.ReadFile(headerPath)
	if err != nil {
		t.Fatalf("read the ABI header: %v", err)
	}
	h, err := parseHeader(string(src))
	if err != nil {
		t.Fatalf("parse %s: %v", headerPath, err)
	}
	return h
}

func TestABIMatchesHeader(t *testing.T) {
	h := readHeader(t)
	mirrors, problems, err := parseMirrors("abi.go")
	if err != nil {
		t.Fatalf("parse abi.go: %v", err)
	}
	problems = append(problems, diffABI(h.consts, mirrors)...)
	for _, p := range problems {
		t.Error(p)
	}
	// Guard against parsers that silently find nothing.
	if want, got := int64(0x10), h.consts["NSB_MSG_ECHO"]; want != got {
		t.Errorf("header: NSB_MSG_ECHO: want %#x, got %#x", want, got)
	}
	if got := mirrors["NSB_MSG_ECHO"].goName; got != "MsgEcho" {
		t.Errorf("abi.go: NSB_MSG_ECHO: want mirror MsgEcho, got %q", got)
	}
}

func TestABIHeaderLayout(t *testing.T) {
	h := readHeader(t)
	var got []string
	sizes := map[reflect.Kind]string{reflect.Uint8: "__u8", reflect.Uint16: "__u16", reflect.Uint32: "__u32"}
	ht := reflect.TypeFor[Header]()
	for i := range ht.NumField() {
		f := ht.Field(i)
		got = append(got, sizes[f.Type.Kind()]+" "+strings.ToLower(f.Name))
	}
	if want := h.structs["nsb_msghdr"]; !reflect.DeepEqual(want, got) {
		t.Errorf("struct nsb_msghdr: want %q, got Header %q", want, got)
	}
	if want, got := int(ht.Size()), HeaderLen; want != got {
		t.Errorf("HeaderLen: want %d (the size of Header), got %d", want, got)
	}
}

// TestABIErrorNames checks the C names decode errors print.
func TestABIErrorNames(t *testing.T) {
	h := readHeader(t)
	for _, names := range []map[uint16]string{attrNames, statsAttrNames} {
		for v, name := range names {
			if want, ok := h.consts[name]; !ok || want != int64(v) {
				t.Errorf("error name %s for attribute %d: header says %d (defined: %v)", name, v, want, ok)
			}
		}
	}
}

// TestABICheckDetectsDrift proves the check above can fail: it edits the
// header and expects exactly the problems the edits cause.
func TestABICheckDetectsDrift(t *testing.T) {
	src, err := os.ReadFile(headerPath)
	if err != nil {
		t.Fatalf("read the ABI header: %v", err)
	}
	edited := string(src)
	for _, r := range [][2]string{
		{"#define NSB_GROUPS\t\t32", "#define NSB_GROUPS\t\t64"},
		{"\n\n\t__NSB_A_LAST,", "\n\tNSB_A_NEW,\n\n\t__NSB_A_LAST,"},
		{"\tNSB_MSG_PUBLISH,\n", ""},
	} {
		if !strings.Contains(edited, r[0]) {
			t.Fatalf("header no longer contains %q; update this test's edits", r[0])
		}
		edited = strings.Replace(edited, r[0], r[1], 1)
	}
	h, err := parseHeader(edited)
	if err != nil {
		t.Fatalf("parse edited header: %v", err)
	}
	mirrors, _, err := parseMirrors("abi.go")
	if err != nil {
		t.Fatalf("parse abi.go: %v", err)
	}
	want := []string{
		fmt.Sprintf("AttrMax mirrors NSB_A_MAX: want %d, got %d", AttrMax+1, AttrMax),
		fmt.Sprintf("Groups mirrors NSB_GROUPS: want 64, got %d", Groups),
		fmt.Sprintf("MsgEvent mirrors NSB_MSG_EVENT: want %d, got %d", MsgEvent-1, MsgEvent),
		fmt.Sprintf("MsgGroups mirrors NSB_MSG_GROUPS: want %d, got %d", MsgGroups-1, MsgGroups),
		fmt.Sprintf("MsgMax mirrors NSB_MSG_MAX: want %d, got %d", MsgMax-1, MsgMax),
		"MsgPublish mirrors NSB_MSG_PUBLISH, which the header does not define",
		fmt.Sprintf("MsgStats mirrors NSB_MSG_STATS: want %d, got %d", MsgStats-1, MsgStats),
		fmt.Sprintf("NSB_A_NEW = %d has no Go mirror in abi.go", AttrMax+1),
	}
	if got := diffABI(h.consts, mirrors); !reflect.DeepEqual(want, got) {
		t.Errorf("problems:\nwant %q\ngot  %q", want, got)
	}
}

func TestParseHeaderRejectsUnknownSyntax(t *testing.T) {
	for _, src := range []string{
		"#define NSB_X (1 << 3)",
		"enum e {\n\tNSB_A = 1 | 2,\n};",
		"struct s {\n\t__u8 a[4];\n};",
		"enum e {\n\tNSB_A,\n",
	} {
		if _, err := parseHeader(src); err == nil {
			t.Errorf("parseHeader(%q): want an error, got none", src)
		}
	}
}
