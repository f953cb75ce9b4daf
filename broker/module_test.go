package broker

import (
	"context"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nsbroker/nsbroker/broker/brokertest"
	"github.com/nsbroker/nsbroker/family"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// unitModule plays the module's sysfs unit parameter for a broker on a
// fake kernel: it counts the reads, and dials on any other unit fail as
// they would on a real kernel.
type unitModule struct {
	k *brokertest.Kernel

	mu    sync.Mutex
	unit  int
	reads int
	dials []int // the unit of every dial
}

func (m *unitModule) readUnit() (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	return m.unit, nil
}

func (m *unitModule) dial(ns *nsmgr.Namespace, unit, readBuffer int) (*family.Conn, error) {
	m.mu.Lock()
	m.dials = append(m.dials, unit)
	ok := unit == m.unit
	m.mu.Unlock()
	if !ok {
		return nil, unix.EPROTONOSUPPORT
	}
	return m.k.Dial(ns, unit, readBuffer)
}

func (m *unitModule) counts() (reads int, dials []int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads, append([]int(nil), m.dials...)
}

func attachOne(t *testing.T, b *Broker) Info {
	t.Helper()
	name, _ := newNamed(t)
	in, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name})
	if err != nil {
		t.Fatalf("Attach(%q): %v", name, err)
	}
	return in
}

// TestUnitReadOncePerModuleLoad: the unit is read at the first dial and
// reused; a dial that fails with the cached unit reads it again and
// retries with the new one, as after a reload with another unit.
func TestUnitReadOncePerModuleLoad(t *testing.T) {
	k := brokertest.NewKernel()
	m := &unitModule{k: k, unit: family.DefaultUnit}
	cfg := fakeConfig(k)
	cfg.Unit = 0
	cfg.Dial = m.dial
	cfg.readUnit = m.readUnit
	b := New(cfg)
	t.Cleanup(func() { b.Close() })

	for range 3 {
		if in := attachOne(t, b); in.State != StateReady {
			t.Fatalf("attach: want ready, got %v (%s)", in.State, in.Reason)
		}
	}
	if reads, dials := m.counts(); reads != 1 || len(dials) != 3 {
		t.Fatalf("after 3 attaches: want 1 unit read and 3 dials, got %d reads, dials %v", reads, dials)
	}

	m.mu.Lock()
	m.unit = family.DefaultUnit + 1
	m.mu.Unlock()
	if in := attachOne(t, b); in.State != StateReady {
		t.Fatalf("attach after the unit changed: want ready, got %v (%s)", in.State, in.Reason)
	}
	reads, dials := m.counts()
	want := []int{family.DefaultUnit, family.DefaultUnit, family.DefaultUnit, family.DefaultUnit, family.DefaultUnit + 1}
	if reads != 2 || !slices.Equal(dials, want) {
		t.Fatalf("after the unit changed: want 2 reads and dials %v, got %d reads, dials %v", want, reads, dials)
	}
	if in := attachOne(t, b); in.State != StateReady {
		t.Fatalf("attach: want ready, got %v (%s)", in.State, in.Reason)
	}
	if reads, dials := m.counts(); reads != 2 || dials[len(dials)-1] != family.DefaultUnit+1 {
		t.Fatalf("next attach: want the new unit reused (2 reads), got %d reads, dials %v", reads, dials)
	}
}

// TestUnitReadAgainAfterUnload: once the broker has seen the module
// unloaded, the next dial reads the unit again.
func TestUnitReadAgainAfterUnload(t *testing.T) {
	k := brokertest.NewKernel()
	m := &unitModule{k: k, unit: family.DefaultUnit}
	cfg := fakeConfig(k)
	cfg.Unit = 0
	cfg.Dial = m.dial
	cfg.readUnit = m.readUnit
	cfg.ModuleIdentity = k.Identity
	b := New(cfg)
	t.Cleanup(func() { b.Close() })

	in := attachOne(t, b)
	b.Release()
	k.SetLoaded(false)
	waitUntil(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.sawAbsent })
	k.Reload()
	k.SetLoaded(true)
	waitState(t, b, in.Name, StateReady)
	if reads, dials := m.counts(); reads != 2 || len(dials) != 2 {
		t.Fatalf("dial after an unload: want the unit read again (2 reads, 2 dials), got %d reads, dials %v", reads, dials)
	}
}

// TestReleaseEndsOnQuickReload: an unload and reload between two looks of
// the broker is seen by the module's new identity, and the broker
// re-dials without Resume.
func TestReleaseEndsOnQuickReload(t *testing.T) {
	b, k, names, inums := identitySetup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sub, err := subscribe(ctx, b, names[0], []uint32{2})
	if err != nil {
		t.Fatal(err)
	}
	k.Publish(inums[0], 2, nil)
	wantMessage(t, recv(t, sub), 2, 1)

	b.Release()
	wantGap(t, recv(t, sub), Gap{Group: 2, From: 2, Reason: LossReleased})
	if n := k.OpenSockets(); n != 0 {
		t.Fatalf("%d sockets open after Release, want 0", n)
	}
	k.Reload() // never seen unloaded
	k.Publish(inums[0], 2, nil)
	waitState(t, b, names[0], StateReady)
	b.mu.Lock()
	sawAbsent, held := b.sawAbsent, b.held
	b.mu.Unlock()
	if sawAbsent || held {
		t.Fatalf("after a quick reload: want resumed without seeing the module absent, got held %v sawAbsent %v", held, sawAbsent)
	}
	seq := k.Publish(inums[0], 2, nil)
	wantGap(t, recv(t, sub), Gap{Group: 2, From: 1, To: 1, Reason: LossModuleReloaded})
	wantMessage(t, recv(t, sub), 2, seq)
	if in, err := b.Get(names[0]); err != nil || in.Epoch != 2 {
		t.Fatalf("after the quick reload: want epoch 2, got %+v, %v", in, err)
	}
}

// TestReleaseWaitsWithoutReload: with identities, a Release with the same
// module still loaded holds until Resume.
func TestReleaseWaitsWithoutReload(t *testing.T) {
	b, k, names, _ := identitySetup(t)
	b.Release()
	// Let the recovery loop look several times: it takes a wake-up only
	// when it has finished with the previous one.
	for range 5 {
		b.kickRecovery()
		waitUntil(t, func() bool { return len(b.wake) == 0 })
	}
	if n := k.OpenSockets(); n != 0 {
		t.Fatalf("released with the module unchanged: want no socket, got %d", n)
	}
	if in, _ := b.Get(names[0]); in.State != StateUnavailable {
		t.Fatalf("released: want unavailable, got %v", in.State)
	}
	b.Resume()
	waitState(t, b, names[0], StateReady)
}

// identitySetup attaches one namespace to a broker on a fake kernel whose
// module identity is the kernel's instance.
func identitySetup(t *testing.T) (*Broker, *brokertest.Kernel, []string, []uint32) {
	t.Helper()
	k := brokertest.NewKernel()
	cfg := fakeConfig(k)
	cfg.ModuleIdentity = k.Identity
	b := New(cfg)
	t.Cleanup(func() { b.Close() })
	name, ns := newNamed(t)
	if in, err := b.Attach(context.Background(), name, nsmgr.Ref{Name: name}); err != nil || in.State != StateReady {
		t.Fatalf("Attach(%q) = %+v, %v; want ready", name, in, err)
	}
	return b, k, []string{name}, []uint32{ns.Inode()}
}

// TestUnavailableCount: the count the recovery loop checks before walking
// the namespaces follows them through Release, Detach, Resume and Close.
func TestUnavailableCount(t *testing.T) {
	b, _, names, _ := fakeSetup(t, 3, nil)
	want := func(what string, n int64) {
		t.Helper()
		if got := b.unavailable.Load(); got != n {
			t.Fatalf("%s: want %d unavailable, got %d", what, n, got)
		}
	}
	want("attached", 0)
	b.Release()
	want("released", 3)
	if err := b.Detach(names[0]); err != nil {
		t.Fatal(err)
	}
	want("one detached", 2)
	b.Resume()
	for _, name := range names[1:] {
		waitState(t, b, name, StateReady)
	}
	want("resumed", 0)
	b.Release()
	b.Close()
	want("closed", 0)
}
