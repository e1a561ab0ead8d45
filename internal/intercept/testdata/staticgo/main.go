// Command staticgo is an unmodified net/http server for the intercept
// tests: it only calls http.ListenAndServe on the address in its argument.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "staticgo-ok") })
	log.Fatal(http.ListenAndServe(os.Args[1], nil))
}
