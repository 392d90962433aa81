package image

import (
	"fmt"
	"os"
)

// AgentPath is where Build puts the agent in the initramfs, and
// agentScript the boot script that starts it.
const (
	AgentPath   = "usr/bin/sbuml-guest"
	agentScript = "etc/sbuml/rc.d/50-sbuml-guest"
)

// agentFiles returns the initramfs files that add the sbuml-guest binary
// at path and start it at boot.
func agentFiles(path string) ([]File, error) {
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("build image: agent binary: %w", err)
	}
	script, err := files.ReadFile("files/agent/sbuml-guest")
	if err != nil {
		return nil, fmt.Errorf("build image: %w", err) // embedded: cannot fail
	}
	return []File{
		{Path: AgentPath, Mode: 0o755, Data: bin},
		{Path: agentScript, Mode: 0o755, Data: script},
	}, nil
}
