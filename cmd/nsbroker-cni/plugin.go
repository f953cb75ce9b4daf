package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nsbroker/nsbroker/attacher"
	"github.com/nsbroker/nsbroker/nsmgr"
)

// Chaining came with CNI 0.3.0; the newest version is the library's.
var supportedVersions = version.VersionsStartingFrom("0.3.0")

const about = "nsbroker-cni: attaches container network namespaces to nsbrokerd (a chained CNI plugin)"

// Error codes of the plugin's own (the spec reserves 100 and up).
const (
	// codeRefused: nsbrokerd answered the request with an error.
	codeRefused uint = 100
	// codeNotAttached: CHECK found the namespace not attached.
	codeNotAttached uint = 101
	// codeNameTaken: the attach name belongs to another namespace.
	codeNameTaken uint = 102
	// codeNotAvailable is the spec's STATUS code "the plugin cannot
	// service ADD requests" (CNI 1.1).
	codeNotAvailable uint = 50
)

// funcs are the plugin's commands; ADD writes its result to stdout. GC
// has nothing to do: the daemon detaches namespaces that are gone by
// itself, and a pod's other networks may still want what one network's
// GC would remove.
func funcs(stdout io.Writer) skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    func(args *skel.CmdArgs) error { return cmdAdd(args, stdout) },
		Del:    cmdDel,
		Check:  cmdCheck,
		Status: cmdStatus,
	}
}

// cmdAdd attaches the container's namespace and passes prevResult on.
func cmdAdd(args *skel.CmdArgs, stdout io.Writer) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	c, err := dial(ctx, conf, "ADD")
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Attach(ctx, conf.attachName(args.ContainerID), netnsRef(args.Netns)); err != nil {
		return cniError("ADD", err)
	}
	return writeResult(conf, stdout)
}

// cmdDel detaches the container's namespace. Whatever is gone already
// (the attachment, the namespace, the daemon) counts as done, as the spec
// asks of DEL.
func cmdDel(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	c, err := attacher.Dial(ctx, conf.Socket)
	if errors.Is(err, attacher.ErrDaemonDown) {
		return nil // nothing is attached to a daemon that is not running
	}
	if err != nil {
		return cniError("DEL", err)
	}
	defer c.Close()
	if _, err := c.Detach(ctx, conf.attachName(args.ContainerID)); err != nil {
		return cniError("DEL", err)
	}
	return nil
}

// cmdCheck verifies that the container's namespace is attached.
func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	c, err := dial(ctx, conf, "CHECK")
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Check(ctx, conf.attachName(args.ContainerID), netnsRef(args.Netns)); err != nil {
		return cniError("CHECK", err)
	}
	return nil
}

// cmdStatus reports whether the daemon is there to serve an ADD.
func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), conf.timeout)
	defer cancel()
	c, err := attacher.Dial(ctx, conf.Socket)
	if err == nil {
		defer c.Close()
		err = c.Serving(ctx)
	}
	if err != nil {
		return types.NewError(codeNotAvailable, "nsbroker-cni: STATUS: "+err.Error(), "")
	}
	return nil
}

// dial connects to the daemon; a daemon that cannot be reached is worth
// retrying later.
func dial(ctx context.Context, conf *netConf, op string) (*attacher.Client, error) {
	c, err := attacher.Dial(ctx, conf.Socket)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("nsbroker-cni: %s: %v", op, err),
			`is nsbrokerd running? Its admin socket is the "socket" key of the network configuration`)
	}
	return c, nil
}

// cniError turns an error of op into a CNI error result.
func cniError(op string, err error) *types.Error {
	code := codeRefused
	switch {
	case errors.Is(err, attacher.ErrNoNamespace):
		code = types.ErrInvalidNetNS
	case errors.Is(err, attacher.ErrNotAttached):
		code = codeNotAttached
	case errors.Is(err, attacher.ErrNameTaken):
		code = codeNameTaken
	case errors.Is(err, attacher.ErrDaemonDown), errors.Is(err, context.DeadlineExceeded),
		status.Code(err) == codes.DeadlineExceeded, status.Code(err) == codes.Unavailable:
		code = types.ErrTryAgainLater
	}
	return types.NewError(code, fmt.Sprintf("nsbroker-cni: %s: %v", op, err), "")
}

// writeResult writes the previous plugin's result as it came, or an empty
// result when the plugin is first in the chain.
func writeResult(conf *netConf, stdout io.Writer) error {
	if conf.prevResult != nil {
		if _, err := stdout.Write(conf.prevResult); err != nil {
			return types.NewError(types.ErrIOFailure, "nsbroker-cni: writing the result: "+err.Error(), "")
		}
		return nil
	}
	res, err := (&current.Result{CNIVersion: current.ImplementedSpecVersion}).GetAsVersion(conf.CNIVersion)
	if err == nil {
		err = res.PrintTo(stdout)
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, "nsbroker-cni: writing the result: "+err.Error(), "")
	}
	return nil
}

// netnsRef refers to the namespace file CNI_NETNS with the symbolic links
// of its directory resolved (/var/run/netns is /run/netns on most
// systems), so that a daemon in a container, which mounts only /run/netns,
// finds the same file. The file itself may be /proc/PID/ns/net, a magic
// link that must stay as it is.
func netnsRef(netns string) nsmgr.Ref {
	p, err := filepath.Abs(netns)
	if err != nil {
		return nsmgr.Ref{Path: netns}
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
		p = filepath.Join(dir, filepath.Base(p))
	}
	return nsmgr.Ref{Path: p}
}
