// Package docs holds the project's documentation, embedded so that tests
// can check what it shows: test/netns/docs runs every grpcurl command the
// docs give against a real daemon in the test VM.
package docs

import "embed"

// Files are the Markdown files of this directory.
//
//go:embed *.md
var Files embed.FS
