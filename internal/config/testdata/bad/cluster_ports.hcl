# health_port defaults to 9010.
cluster "ports" {
  api_port = 9010
  network "default" {}
  node "node1" {
    addresses = { default = "198.18.0.1" }
  }
}
