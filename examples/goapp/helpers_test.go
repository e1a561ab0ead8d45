package main

import (
	"net"
	"strconv"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

func dialRaw(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
