package family

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// specPath is the YNL spec of the family (netlink-raw), which the kernel's
// ynl tools read. It must say what the uapi header says; this file checks
// that it does, and that abi.go agrees with both.
var specPath = filepath.Join("..", "kmod", "nsbroker.yaml")

// ynlSpec is the part of a netlink-raw spec these checks read.
type ynlSpec struct {
	Name        string `yaml:"name"`
	Protocol    string `yaml:"protocol"`
	Protonum    int64  `yaml:"protonum"`
	Definitions []struct {
		Name    string `yaml:"name"`
		Type    string `yaml:"type"`
		Value   *int64 `yaml:"value"`
		Doc     string `yaml:"doc"`
		Members []struct {
			Name string `yaml:"name"`
			Type string `yaml:"type"`
			Doc  string `yaml:"doc"`
		} `yaml:"members"`
	} `yaml:"definitions"`
	AttributeSets []ynlAttrSet `yaml:"attribute-sets"`
	Operations    struct {
		NamePrefix  string `yaml:"name-prefix"`
		EnumName    string `yaml:"enum-name"`
		EnumModel   string `yaml:"enum-model"`
		FixedHeader string `yaml:"fixed-header"`
		List        []struct {
			Name         string   `yaml:"name"`
			Value        *int64   `yaml:"value"`
			AttributeSet string   `yaml:"attribute-set"`
			Flags        []string `yaml:"flags"`
			Do           *struct {
				Request *ynlAttrList `yaml:"request"`
				Reply   *ynlAttrList `yaml:"reply"`
			} `yaml:"do"`
			Event *ynlAttrList `yaml:"event"`
		} `yaml:"list"`
	} `yaml:"operations"`
	McastGroups struct {
		List []struct {
			Name  string `yaml:"name"`
			Value int64  `yaml:"value"`
		} `yaml:"list"`
	} `yaml:"mcast-groups"`
}

type ynlAttrList struct {
	Attributes []string `yaml:"attributes"`
}

type ynlAttrSet struct {
	Name       string `yaml:"name"`
	NamePrefix string `yaml:"name-prefix"`
	EnumName   string `yaml:"enum-name"`
	SubsetOf   string `yaml:"subset-of"`
	Attributes []struct {
		Name             string `yaml:"name"`
		Type             string `yaml:"type"`
		Value            *int64 `yaml:"value"`
		Doc              string `yaml:"doc"`
		NestedAttributes string `yaml:"nested-attributes"`
		MultiAttr        bool   `yaml:"multi-attr"`
	} `yaml:"attributes"`
}

// cName is the C name YNL gives a spec name: upper case, '-' as '_'.
func cName(prefix, name string) string {
	return strings.ToUpper(strings.ReplaceAll(prefix+name, "-", "_"))
}

var (
	memberComment = regexp.MustCompile(`(?s)^\s*(\w+)(?:\s+(\w+))?\s*[,;]?\s*/\*(.*?)\*/`)
	commentStar   = regexp.MustCompile(`(?m)^\s*\*\s?`)
	attrRef       = regexp.MustCompile(`\bNSB_A_[A-Z0-9_]+\b`)
)

// oneLine folds a comment or a YAML doc string to single spaces.
func oneLine(s string) string {
	return strings.Join(strings.Fields(commentStar.ReplaceAllString(s, " ")), " ")
}

// headerComments maps each enum member and struct field of the header to
// the comment after it (for a struct field, by "struct.field").
func headerComments(src string) map[string]string {
	docs := map[string]string{}
	lines := strings.Split(src, "\n")
	structName := ""
	for i, line := range lines {
		if m := structStart.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			structName = m[1]
			continue
		}
		if strings.TrimSpace(line) == "};" {
			structName = ""
		}
		if !strings.Contains(line, "/*") || strings.HasPrefix(strings.TrimSpace(line), "/*") {
			continue
		}
		// The comment may go on over the next lines.
		text := line
		for j := i + 1; !strings.Contains(text, "*/") && j < len(lines); j++ {
			text += "\n" + lines[j]
		}
		m := memberComment.FindStringSubmatch(text)
		if m == nil {
			continue
		}
		key := m[1]
		if structName != "" && m[2] != "" {
			key = structName + "." + m[2]
		}
		docs[key] = oneLine(m[3])
	}
	return docs
}

// headerMessageAttrs reads the header's list of messages and returns, for
// each NSB_MSG_*, the NSB_A_* it names for the request, the reply and the
// event ("request", "reply", "event").
func headerMessageAttrs(src string) map[string]map[string][]string {
	start := strings.Index(src, " * Messages (nlmsg_type)")
	end := strings.Index(src, " * Errors come back")
	if start < 0 || end < start {
		return nil
	}
	msgs := map[string]map[string][]string{}
	var msg, part string
	msgLine := regexp.MustCompile(`^ \*   (NSB_MSG_\w+)\s+(.*)$`)
	for _, line := range strings.Split(src[start:end], "\n") {
		if m := msgLine.FindStringSubmatch(line); m != nil {
			msg, line = m[1], m[2]
			msgs[msg] = map[string][]string{}
		}
		if msg == "" {
			continue
		}
		switch t := strings.TrimLeft(line, " *"); {
		case strings.HasPrefix(t, "request:"):
			part = "request"
		case strings.HasPrefix(t, "reply:"):
			part = "reply"
		case strings.HasPrefix(t, "kernel to user only"):
			part = "event"
		case strings.HasPrefix(t, "effect:"), strings.HasPrefix(t, "needs "):
			part = ""
		}
		if part != "" {
			msgs[msg][part] = append(msgs[msg][part], attrRef.FindAllString(line, -1)...)
		}
	}
	return msgs
}

// checkSpec lists every way the spec disagrees with the header and with
// the Go mirrors of abi.go.
func checkSpec(spec *ynlSpec, h *cHeader, hsrc string, mirrors map[string]goMirror) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	// want checks a spec value against the header and the Go mirror.
	want := func(what, c string, got int64) {
		v, ok := h.consts[c]
		switch {
		case !ok:
			bad("%s: %s is not in the header", what, c)
		case v != got:
			bad("%s: spec says %d, header %s = %d", what, got, c, v)
		}
		if m, ok := mirrors[c]; ok && m.value != got {
			bad("%s: spec says %d, abi.go %s = %d", what, got, m.goName, m.value)
		}
	}
	docs := headerComments(hsrc)

	if spec.Name != "nsbroker" || spec.Protocol != "netlink-raw" {
		bad("family %q, protocol %q: want nsbroker, netlink-raw", spec.Name, spec.Protocol)
	}
	want("protonum", "NETLINK_NSBROKER", spec.Protonum)

	// Constants and the fixed header.
	covered := map[string]bool{"NETLINK_NSBROKER": true}
	for _, d := range spec.Definitions {
		switch d.Type {
		case "const":
			c := cName("nsb-", d.Name)
			covered[c] = true
			if d.Value == nil {
				bad("const %s: no value", d.Name)
				continue
			}
			want("const "+d.Name, c, *d.Value)
		case "struct":
			c := strings.ToLower(cName("", d.Name))
			var got []string
			for _, m := range d.Members {
				got = append(got, "__"+m.Type+" "+m.Name)
				if hd := docs[c+"."+m.Name]; oneLine(m.Doc) != hd {
					bad("struct %s member %s: doc %q, header %q", d.Name, m.Name, oneLine(m.Doc), hd)
				}
			}
			if hs := h.structs[c]; !reflect.DeepEqual(hs, got) {
				bad("struct %s: spec %q, header struct %s %q", d.Name, got, c, hs)
			}
		default:
			bad("definition %s: type %s not expected", d.Name, d.Type)
		}
	}
	var fixed []string
	ht := reflect.TypeFor[Header]()
	for i := range ht.NumField() {
		fixed = append(fixed, strings.ToLower(ht.Field(i).Name))
	}
	if c := strings.ToLower(cName("", spec.Operations.FixedHeader)); c != "nsb_msghdr" {
		bad("operations: fixed-header %q, want the struct of nsb_msghdr", spec.Operations.FixedHeader)
	} else if hs := h.structs[c]; len(hs) != len(fixed) {
		bad("fixed header: Go Header has fields %q, header %q", fixed, hs)
	} else {
		for i, f := range fixed {
			if !strings.HasSuffix(hs[i], " "+f) {
				bad("fixed header member %d: Go Header %s, header %s", i, f, hs[i])
			}
		}
	}

	// Attribute sets: values by YNL's rule (from 1, or the given value,
	// counting up), C names, types and docs against the header.
	sets := map[string]ynlAttrSet{}
	attrTypes := map[string]string{"u32": "u32", "u64": "u64", "binary": "binary", "nested": "nest", "nested:": "nest"}
	for _, s := range spec.AttributeSets {
		sets[s.Name] = s
		if s.SubsetOf != "" {
			continue
		}
		prefix := cName("", s.NamePrefix)
		seen := map[string]bool{}
		next := int64(1)
		for _, a := range s.Attributes {
			if a.Value != nil {
				next = *a.Value
			}
			c := cName(s.NamePrefix, a.Name)
			seen[c] = true
			want("attribute "+s.Name+"."+a.Name, c, next)
			next++
			hd := docs[c]
			if a.Doc != "" || hd != "" {
				if oneLine(a.Doc) != hd {
					bad("attribute %s.%s: doc %q, header %q", s.Name, a.Name, oneLine(a.Doc), hd)
				}
			}
			wantType := ""
			switch {
			case a.Name == "unspec":
				wantType = "unused"
			case a.Name == "pad":
				wantType = "pad"
			case prefix == "NSB_STATS_A_":
				wantType = "u64" // "all u64"
			default:
				wantType = attrTypes[strings.TrimSuffix(strings.Fields(hd + " ?")[0], ",")]
			}
			if a.Type != wantType {
				bad("attribute %s.%s: type %q, header says %q (%q)", s.Name, a.Name, a.Type, wantType, hd)
			}
		}
		for c := range h.consts {
			if strings.HasPrefix(c, prefix) && !strings.HasSuffix(c, "_MAX") && !seen[c] {
				bad("attribute set %s: header's %s missing", s.Name, c)
			}
		}
		covered[prefix+"MAX"] = true
		want("attribute set "+s.Name+" max", prefix+"MAX", next-1)
	}
	for _, s := range spec.AttributeSets {
		for _, a := range s.Attributes {
			if a.NestedAttributes != "" {
				if _, ok := sets[a.NestedAttributes]; !ok {
					bad("attribute %s.%s: nested set %s missing", s.Name, a.Name, a.NestedAttributes)
				}
			}
		}
		if s.SubsetOf != "" {
			parent, ok := sets[s.SubsetOf]
			if !ok {
				bad("attribute set %s: subset of missing set %s", s.Name, s.SubsetOf)
			}
			for _, a := range s.Attributes {
				found := false
				for _, p := range parent.Attributes {
					found = found || p.Name == a.Name
				}
				if !found {
					bad("attribute set %s: %s is not in %s", s.Name, a.Name, s.SubsetOf)
				}
			}
		}
	}

	// The C enums the spec names are the header's.
	enums := []string{spec.Operations.EnumName}
	for _, s := range spec.AttributeSets {
		if s.SubsetOf == "" {
			enums = append(enums, s.EnumName)
		}
	}
	for _, e := range enums {
		if !strings.Contains(hsrc, "\nenum "+e+" {\n") {
			bad("enum-name %q: the header has no enum %s", e, e)
		}
	}

	// Messages: values, and the attributes the header lists for each.
	hmsgs := headerMessageAttrs(hsrc)
	seen := map[string]bool{}
	last := int64(0)
	for _, op := range spec.Operations.List {
		c := cName(spec.Operations.NamePrefix, op.Name)
		seen[c] = true
		if op.Value == nil {
			bad("operation %s: no value", op.Name)
			continue
		}
		want("operation "+op.Name, c, *op.Value)
		last = max(last, *op.Value)
		attrs := map[string]*ynlAttrList{"event": op.Event}
		if op.Do != nil {
			attrs["request"], attrs["reply"] = op.Do.Request, op.Do.Reply
		}
		for _, part := range []string{"request", "reply", "event"} {
			var got []string
			nested := map[string]bool{}
			if l := attrs[part]; l != nil {
				for _, a := range l.Attributes {
					got = append(got, cName("nsb-a-", a))
					for _, sa := range sets[op.AttributeSet].Attributes {
						if sa.Name == a && sa.NestedAttributes != "" {
							for _, n := range sets[sa.NestedAttributes].Attributes {
								nested[cName("nsb-a-", n.Name)] = true
							}
						}
					}
				}
			}
			hw := map[string]bool{}
			for _, a := range hmsgs[c][part] {
				hw[a] = true
			}
			for _, a := range got {
				if !hw[a] {
					bad("operation %s %s: %s, which the header does not list", op.Name, part, a)
				}
				delete(hw, a)
			}
			for a := range hw {
				if !nested[a] {
					bad("operation %s %s: header lists %s, the spec does not", op.Name, part, a)
				}
			}
		}
		if (op.Name == "publish") != (len(op.Flags) == 1 && op.Flags[0] == "admin-perm") {
			bad("operation %s: flags %q; only PUBLISH needs CAP_NET_ADMIN", op.Name, op.Flags)
		}
	}
	for c := range h.consts {
		if strings.HasPrefix(c, "NSB_MSG_") && c != "NSB_MSG_MAX" && !seen[c] {
			bad("operations: header's %s missing", c)
		}
	}
	covered["NSB_MSG_MAX"] = true
	want("operations max", "NSB_MSG_MAX", last)

	// Every constant of the header is in the spec, one way or another.
	for c := range h.consts {
		if strings.HasPrefix(c, "__") || strings.HasPrefix(c, "NSB_MSG_") || covered[c] {
			continue
		}
		isAttr := false
		for _, s := range spec.AttributeSets {
			isAttr = isAttr || (s.NamePrefix != "" && strings.HasPrefix(c, cName("", s.NamePrefix)))
		}
		if !isAttr {
			bad("header's %s is not in the spec", c)
		}
	}

	// Multicast groups: group-N is group N, for 1..NSB_GROUPS.
	groups := spec.McastGroups.List
	if n := h.consts["NSB_GROUPS"]; int64(len(groups)) != n {
		bad("mcast-groups: %d groups, NSB_GROUPS is %d", len(groups), n)
	}
	for i, g := range groups {
		if w := fmt.Sprintf("group-%d", i+1); g.Name != w || g.Value != int64(i+1) {
			bad("mcast-groups[%d]: %s = %d, want %s = %d", i, g.Name, g.Value, w, i+1)
		}
	}
	sort.Strings(problems)
	return problems
}

func readSpec(t *testing.T, src []byte) *ynlSpec {
	t.Helper()
	var spec ynlSpec
	if err := yaml.Unmarshal(src, &spec); err != nil {
		t.Fatalf("parse %s: %v", specPath, err)
	}
	return &spec
}

// TestSpecMatchesHeader: kmod/nsbroker.yaml, the uapi header and abi.go
// name the same messages, attributes, nested counters, groups and header
// fields, with the same values, and the spec documents each attribute with
// the header's words.
func TestSpecMatchesHeader(t *testing.T) {
	src, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read the spec: %v", err)
	}
	hsrc, err := os.ReadFile(headerPath)
	if err != nil {
		t.Fatalf("read the ABI header: %v", err)
	}
	mirrors, _, err := parseMirrors("abi.go")
	if err != nil {
		t.Fatalf("parse abi.go: %v", err)
	}
	for _, p := range checkSpec(readSpec(t, src), readHeader(t), string(hsrc), mirrors) {
		t.Error(p)
	}
	// Guard against parsers that silently find nothing.
	hm := headerMessageAttrs(string(hsrc))
	if got := hm["NSB_MSG_EVENT"]["event"]; len(got) != 6 {
		t.Errorf("header: EVENT attributes %q, want 6", got)
	}
	if got := headerComments(string(hsrc))["NSB_STATS_A_OVERRUN"]; !strings.HasPrefix(got, "events a member with NETLINK_BROADCAST_ERROR") {
		t.Errorf("header: NSB_STATS_A_OVERRUN comment %q", got)
	}
}

// TestSpecCheckDetectsDrift edits the spec and expects the problems.
func TestSpecCheckDetectsDrift(t *testing.T) {
	src, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read the spec: %v", err)
	}
	hsrc, err := os.ReadFile(headerPath)
	if err != nil {
		t.Fatalf("read the ABI header: %v", err)
	}
	edited := string(src)
	for _, r := range [][2]string{
		{"      value: 19\n", "      value: 21\n"},
		{"        name: instance-id\n        type: u64\n", "        name: instance-id\n        type: u32\n"},
		{"          - sender-portid\n", ""},
		{"      name: group-32\n      value: 32\n", "      name: group-32\n      value: 33\n"},
		{"        name: reserved\n        type: u16\n", "        name: reserved\n        type: u8\n"},
		{"enum-name: nsb_stats_attr\n", "enum-name: nsb_stat_attr\n"},
	} {
		if !strings.Contains(edited, r[0]) {
			t.Fatalf("spec no longer contains %q; update this test's edits", r[0])
		}
		edited = strings.Replace(edited, r[0], r[1], 1)
	}
	mirrors, _, err := parseMirrors("abi.go")
	if err != nil {
		t.Fatalf("parse abi.go: %v", err)
	}
	got := checkSpec(readSpec(t, []byte(edited)), readHeader(t), string(hsrc), mirrors)
	want := []string{
		`attribute attrs.instance-id: type "u32", header says "u64" ("u64, random, new for every per-namespace instance")`,
		`enum-name "nsb_stat_attr": the header has no enum nsb_stat_attr`,
		"mcast-groups[31]: group-32 = 33, want group-32 = 32",
		"operation event event: header lists NSB_A_SENDER_PORTID, the spec does not",
		"operation stats: spec says 21, abi.go MsgStats = 19",
		"operation stats: spec says 21, header NSB_MSG_STATS = 19",
		"operations max: spec says 21, abi.go MsgMax = 20",
		"operations max: spec says 21, header NSB_MSG_MAX = 20",
		`struct nsb-msghdr: spec ["__u8 version" "__u8 flags" "__u8 reserved"], header struct nsb_msghdr ["__u8 version" "__u8 flags" "__u16 reserved"]`,
	}
	if !reflect.DeepEqual(want, got) {
		t.Errorf("problems:\nwant %q\ngot  %q", want, got)
	}
}
