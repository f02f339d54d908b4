package testdaemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority made for one set of hosts: it signs each
// daemon's server certificate (for its IP) and one client certificate, so
// that the daemons are reached as remote hosts are, over TCP with mutual
// TLS (dockerd --tlsverify).
type CA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pem    []byte
	client tls.Certificate
}

// NewCA makes a CA and a client certificate signed by it, valid for a day.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "dockerpool-testdaemon CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	certPEM, keyPEM, err := ca.issue("dockerpool-testdaemon client", nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	if ca.client, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, err
	}
	return ca, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

// issue signs a certificate for the given IPs and use, and returns it and
// its key in PEM.
func (ca *CA) issue(name string, ips []net.IP, use x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{use},
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// writeServer writes the CA and a server certificate for ip into dir, as
// ca.pem, server-cert.pem and server-key.pem, and returns dockerd's flags
// for them.
func (ca *CA) writeServer(dir string, ip net.IP) ([]string, error) {
	certPEM, keyPEM, err := ca.issue("dockerpool-testdaemon "+ip.String(), []net.IP{ip}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files := map[string][]byte{"ca.pem": ca.pem, "server-cert.pem": certPEM, "server-key.pem": keyPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, fmt.Errorf("testdaemon: write %s: %w", name, err)
		}
	}
	return []string{"--tlsverify",
		"--tlscacert", filepath.Join(dir, "ca.pem"),
		"--tlscert", filepath.Join(dir, "server-cert.pem"),
		"--tlskey", filepath.Join(dir, "server-key.pem")}, nil
}

// ClientTLS is the client's side: it trusts the CA only and presents the
// client certificate.
func (ca *CA) ClientTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{ca.client},
		MinVersion:   tls.VersionTLS12,
	}
}
