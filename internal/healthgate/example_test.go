package healthgate_test

import (
	"fmt"

	"github.com/hotswap-dev/hotswap/internal/healthgate"
)

func ExampleParse() {
	c, err := healthgate.Parse("http://127.0.0.1:{port}/healthz?gen={gen}")
	if err != nil {
		panic(err)
	}
	v := healthgate.Vars{Gen: 4, PID: 8123, Port: 40001}
	fmt.Println(c.Kind(), c.UsesPort(), c.NeedsNotify())
	fmt.Println(c.Expand(v))
	fmt.Println(healthgate.ExpandArgs([]string{"./server", "--admin=127.0.0.1:{port}"}, v))

	_, err = healthgate.Parse("htp://x")
	fmt.Println(err)
	// Output:
	// http true false
	// http://127.0.0.1:40001/healthz?gen=4
	// [./server --admin=127.0.0.1:40001]
	// "htp://x": unknown scheme "htp"
}

func ExampleParseMessage() {
	m, err := healthgate.ParseMessage([]byte("STATUS=warming cache\nMAINPID=4242\n"))
	fmt.Printf("%q %d %v %v\n", m.Status, m.MainPID, m.Ready, err)
	_, err = healthgate.ParseMessage([]byte("READY=yes"))
	fmt.Println(err)
	// Output:
	// "warming cache" 4242 false <nil>
	// healthgate: parse notify message: line 1: READY=yes: want 1
}
