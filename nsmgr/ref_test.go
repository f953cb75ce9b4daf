package nsmgr

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	tests := []struct {
		in   string
		want Ref
		str  string
	}{
		{"name:blue", Ref{Name: "blue"}, "name:blue"},
		{"blue", Ref{Name: "blue"}, "name:blue"},
		{"cni-1:2", Ref{Name: "cni-1:2"}, "name:cni-1:2"},
		{"path:/var/run/docker/netns/abc", Ref{Path: "/var/run/docker/netns/abc"}, "path:/var/run/docker/netns/abc"},
		{"pid:123", Ref{PID: 123}, "pid:123"},
	}
	for _, tt := range tests {
		got, err := ParseRef(tt.in)
		if err != nil {
			t.Errorf("ParseRef(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseRef(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseRef(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
		if back, err := ParseRef(got.String()); err != nil || back != got {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", got.String(), back, err, got)
		}
	}
}

func TestParseRefInvalid(t *testing.T) {
	for _, in := range []string{"", "name:", "name:a/b", "..", "name:.", "path:", "pid:", "pid:x", "pid:0", "pid:-4", "a/b"} {
		r, err := ParseRef(in)
		if !errors.Is(err, ErrInvalidRef) {
			t.Errorf("ParseRef(%q) = %+v, %v; want error matching ErrInvalidRef", in, r, err)
		}
	}
}

func TestRefValidate(t *testing.T) {
	tests := []struct {
		ref Ref
		ok  bool
		str string
	}{
		{Ref{Name: "a"}, true, "name:a"},
		{Ref{Path: "/x"}, true, "path:/x"},
		{Ref{PID: 7}, true, "pid:7"},
		{Ref{}, false, "invalid{nothing}"},
		{Ref{Name: "a", PID: 7}, false, "invalid{name:a pid:7}"},
		{Ref{Name: "a", Path: "/x"}, false, "invalid{name:a path:/x}"},
		{Ref{PID: -1}, false, "invalid{pid:-1}"},
	}
	for _, tt := range tests {
		err := tt.ref.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidRef)) {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tt.ref, err, tt.ok)
		}
		if s := tt.ref.String(); s != tt.str {
			t.Errorf("%+v.String() = %q, want %q", tt.ref, s, tt.str)
		}
	}
}

// TestRefBounds checks that a name of NameMax bytes and a path of PathMax
// bytes are valid, one byte more is not, and the error shows a bounded
// part of it.
func TestRefBounds(t *testing.T) {
	path := func(n int) string { return "/" + strings.Repeat("p", n-1) }
	tests := []struct {
		ref Ref
		ok  bool
	}{
		{Ref{Name: strings.Repeat("n", NameMax)}, true},
		{Ref{Name: strings.Repeat("n", NameMax+1)}, false},
		{Ref{Name: strings.Repeat("n", 100*1024)}, false},
		{Ref{Path: path(PathMax)}, true},
		{Ref{Path: path(PathMax + 1)}, false},
		{Ref{Path: path(100 * 1024)}, false},
		{Ref{Path: "/run/netns/a\x00b"}, false},
	}
	for _, tt := range tests {
		err := tt.ref.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidRef)) {
			t.Errorf("Validate of name %d bytes, path %d bytes: %v, want ok=%v", len(tt.ref.Name), len(tt.ref.Path), err, tt.ok)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("Validate of name %d bytes, path %d bytes: a message of %d bytes: %.300s", len(tt.ref.Name), len(tt.ref.Path), len(err.Error()), err)
		}
		if _, err := Open(tt.ref); !tt.ok && (!errors.Is(err, ErrInvalidRef) || len(err.Error()) > 300) {
			t.Errorf("Open of name %d bytes, path %d bytes: %.400s, want a short error matching ErrInvalidRef", len(tt.ref.Name), len(tt.ref.Path), err)
		}
	}
	if _, err := ParseRef("name:" + strings.Repeat("n", NameMax+1)); !errors.Is(err, ErrInvalidRef) {
		t.Errorf("ParseRef of a name of %d bytes: %v, want an error matching ErrInvalidRef", NameMax+1, err)
	}
}

func TestOpenInvalidRef(t *testing.T) {
	for _, ref := range []Ref{{}, {Name: "a", PID: 1}, {Name: "../etc"}} {
		ns, err := Open(ref)
		if !errors.Is(err, ErrInvalidRef) {
			t.Errorf("Open(%+v) = %v, %v; want error matching ErrInvalidRef", ref, ns, err)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	inner := errors.New("boom")
	err := error(&Error{Op: "open", Namespace: "name:x", Err: inner})
	if got, want := err.Error(), `nsmgr: open "name:x": boom`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, inner) {
		t.Errorf("errors.Is(%v, inner) = false, want true", err)
	}
	if got, want := (&Error{Op: "watch", Err: inner}).Error(), "nsmgr: watch: boom"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestRefProcess(t *testing.T) {
	for _, tt := range []struct {
		ref  Ref
		want int
	}{
		{Ref{PID: 42}, 42},
		{Ref{Path: "/proc/42/ns/net"}, 42},
		{Ref{Path: "/proc/42/task/43/ns/net"}, 42},
		{Ref{Path: "/proc//42/ns/net/"}, 42},
		{Ref{Path: "/proc/self/ns/net"}, 0},
		{Ref{Path: "/proc/42/ns/mnt"}, 0},
		{Ref{Path: "/run/netns/42"}, 0},
		{Ref{Name: "42"}, 0},
	} {
		if got := tt.ref.Process(); got != tt.want {
			t.Errorf("%v.Process() = %d, want %d", tt.ref, got, tt.want)
		}
	}
}
