module "cron" {
  kind  = "light"
  id    = 6
  nodes = ["node3"]

  check "errd" "crond" {
    process = "cron"
  }
}
