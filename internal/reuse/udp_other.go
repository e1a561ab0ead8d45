//go:build !linux

package reuse

import "net/netip"

func probeSource(string, string) (netip.Addr, error) { return netip.Addr{}, errGroupUnsupported }

func udpInodes(int) (map[uint64]bool, error) { return nil, errGroupUnsupported }
