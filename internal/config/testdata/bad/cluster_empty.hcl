cluster "empty" {
  tls {
    ca_file = "/etc/halo/tls/ca.pem"
  }
}
