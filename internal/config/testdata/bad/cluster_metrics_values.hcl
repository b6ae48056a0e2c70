# Bad values in the metrics block: a port out of range, a typo, a
# listener on nothing, a missing port.
cluster "metrics" {
  network "default" {}
  node "node1" {
    addresses = { default = "198.18.0.1" }
  }
  metrics {
    port     = 70000
    network  = "default"
    networks = []
    loopback = "yes"
  }
}
