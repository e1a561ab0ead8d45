// Package cmsg passes descriptors over unix sockets (SCM_RIGHTS): the one
// place hotswap builds and parses the control messages that carry them.
// Every descriptor received is close-on-exec (MSG_CMSG_CLOEXEC), and one
// received along with an error is closed, never leaked.
package cmsg
