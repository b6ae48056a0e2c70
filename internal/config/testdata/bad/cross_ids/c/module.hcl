# Named like the module in a/: the directory must match too.
module "a" {
  kind  = "light"
  id    = 8
  nodes = ["node3"]
}
