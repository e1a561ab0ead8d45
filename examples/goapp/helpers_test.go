package main

import (
	"net"
	"strconv"
	"time"
)

var raceEnabled bool // set by race_test.go in a -race build

func itoa(i int) string { return strconv.Itoa(i) }

func dialRaw(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
