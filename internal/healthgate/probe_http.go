package healthgate

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// httpProbe is ready on a 2xx answer to GET url. Every attempt uses a new
// connection, no proxy, and does not follow redirects.
type httpProbe struct {
	url    string
	client *http.Client
}

func newHTTPProbe(rawURL string, opts Options) httpProbe {
	tlsConf := opts.TLSConfig
	if tlsConf == nil {
		// A readiness probe asks whether the new generation answers, usually
		// on a loopback address its certificate does not name. It still
		// completes the handshake, so a server that cannot load its key
		// fails it. Verify by passing a TLSConfig with ServerName and RootCAs.
		tlsConf = &tls.Config{InsecureSkipVerify: true}
	}
	tr := &http.Transport{
		Proxy:             nil,
		DialContext:       dial(opts),
		TLSClientConfig:   tlsConf,
		DisableKeepAlives: true,
		ForceAttemptHTTP2: false,
	}
	return httpProbe{url: rawURL, client: &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (p httpProbe) attempt(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", p.url, err)
	}
	req.Header.Set("User-Agent", "hotswap-healthgate")
	resp, err := p.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("GET %s: %w", p.url, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("GET %s: %s", p.url, resp.Status)
	}
	return nil
}
