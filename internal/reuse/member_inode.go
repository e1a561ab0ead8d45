package reuse

// Inode is the inode of the member's socket, which stays the same for
// every descriptor of it.
func (m *Member) Inode() uint64 { return m.ino }
