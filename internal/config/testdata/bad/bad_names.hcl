module "my module" {
  kind  = "light"
  id    = 0
  nodes = ["node3"]

  check "errd" "" {}
}
