cluster "dup" {
  network "default" {}
  network "default" {}

  node "node1" {
    addresses = { default = "198.18.0.1" }
  }
  node "node2" {
    addresses = { default = "198.18.0.1" }
  }
  node "node1" {
    addresses = { default = "198.18.0.3" }
  }
}
