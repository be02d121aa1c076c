# Optional: a multi-region trail of the account's API calls, encrypted with
# the deployment's key, into its own bucket (var.enable_cloudtrail).

module "cloudtrail" {
  source     = "./modules/cloudtrail"
  count      = var.enable_cloudtrail ? 1 : 0
  name       = var.name
  kms_key_id = aws_kms_key.main.arn
  bucket     = "${var.images_bucket_name}-trail"
  log_bucket = aws_s3_bucket.logs.id
  retention  = var.log_retention_days
}
