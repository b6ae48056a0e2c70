cluster "c" {
  network "default" {}
}

module "m" {
  kind  = "light"
  id    = 1
  nodes = ["node1"]
}
