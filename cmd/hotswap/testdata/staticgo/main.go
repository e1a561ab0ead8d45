// Command staticgo is an unmodified net/http server for hotswap's
// interception tests: it binds only through http.ListenAndServe on the
// address in its argument, and answers with its generation and pid.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	body := fmt.Sprintf("gen %s pid %d\n", os.Getenv("HOTSWAP_GENERATION"), os.Getpid())
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) })
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}
