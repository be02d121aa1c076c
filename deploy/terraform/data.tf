# The data: one KMS key for everything the service stores or sends, the event
# stream, the tables (the list `shopstream init` creates), the images bucket,
# the notification topics and the SES identity.

resource "aws_kms_key" "main" {
  description             = "${var.name}: stream, tables, bucket, topics, logs, secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  # The default key policy (the account administers the key through IAM)
  # and the services that encrypt with it on the account's behalf.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid    = "ServicesEncrypt"
        Effect = "Allow"
        Principal = { Service = [
          "logs.${var.region}.amazonaws.com",
          "cloudwatch.amazonaws.com",
          "sns.amazonaws.com",
          "cloudtrail.amazonaws.com",
        ] }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*", "kms:Encrypt", "kms:ReEncrypt*", "kms:DescribeKey"]
        Resource  = "*"
        Condition = { StringEquals = { "aws:SourceAccount" = local.account } }
      },
    ]
  })
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}

resource "aws_kinesis_stream" "events" {
  name             = var.kinesis_stream_name
  retention_period = var.kinesis_retention_hours
  encryption_type  = "KMS"
  kms_key_id       = aws_kms_key.main.arn
  stream_mode_details {
    stream_mode = "ON_DEMAND"
  }
}

# The same list as storage::Table::ALL, with the TTL attribute of
# storage::Table::ttl_attribute (checked by test_terraform.py against
# `shopstream init --plan`).
locals {
  tables = {
    users        = null
    products     = null
    meta         = "ttl"
    log          = null
    leases       = null
    inventory    = null
    analytics    = null
    behaviour    = null
    dead_letters = null
    alerts       = null
    baskets      = "ttl"
    orders       = null
    outbox       = null
  }
}

resource "aws_dynamodb_table" "tables" {
  for_each     = local.tables
  name         = "${var.table_prefix}${each.key}"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "pk"
  range_key    = "sk"

  attribute {
    name = "pk"
    type = "S"
  }
  attribute {
    name = "sk"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }
  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.main.arn
  }
  dynamic "ttl" {
    for_each = each.value == null ? [] : [each.value]
    content {
      attribute_name = ttl.value
      enabled        = true
    }
  }
  deletion_protection_enabled = true
}

resource "aws_s3_bucket" "images" {
  # checkov:skip=CKV2_AWS_62: nothing reacts to a new image; the service writes and reads them itself.
  # checkov:skip=CKV_AWS_144: single-region deployment; versioning keeps overwritten images (docs/deploy-aws.md: adding replication).
  bucket = var.images_bucket_name
}

resource "aws_s3_bucket_public_access_block" "images" {
  bucket                  = aws_s3_bucket.images.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "images" {
  bucket = aws_s3_bucket.images.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "images" {
  bucket = aws_s3_bucket.images.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "images" {
  bucket = aws_s3_bucket.images.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.main.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "images" {
  bucket = aws_s3_bucket.images.id
  rule {
    id     = "old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_logging" "images" {
  bucket        = aws_s3_bucket.images.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3/images/"
}

resource "aws_s3_bucket_policy" "images" {
  bucket = aws_s3_bucket.images.id
  policy = data.aws_iam_policy_document.images_tls.json
}

data "aws_iam_policy_document" "images_tls" {
  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.images.arn, "${aws_s3_bucket.images.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sns_topic" "orders" {
  name              = "${var.name}-order-notifications"
  kms_master_key_id = aws_kms_key.main.arn
}

resource "aws_sns_topic" "supplier_alerts" {
  name              = "${var.name}-supplier-alerts"
  kms_master_key_id = aws_kms_key.main.arn
}

resource "aws_sns_topic" "ops" {
  name              = "${var.name}-ops-alarms"
  kms_master_key_id = aws_kms_key.main.arn
}

resource "aws_sns_topic_subscription" "ops_email" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.ops.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

resource "aws_sesv2_email_identity" "sender" {
  email_identity = var.ses_from_address
}

# The HS256 key of the service's own tokens. Terraform creates the parameter
# with a placeholder and never reads it back: set the real value with
# `aws ssm put-parameter --overwrite` (docs/deploy-aws.md).
resource "aws_ssm_parameter" "jwt_secret" {
  name        = "/${var.name}/jwt_secret"
  description = "shopstream jwt_secret (at least 32 characters)"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  # Shorter than 32 characters: the service refuses to start until it is set.
  value = "set me: docs/deploy-aws.md"
  lifecycle {
    ignore_changes = [value]
  }
}

# The pages client's secret, for the task (SHOPSTREAM_OIDC_CLIENT_SECRET).
resource "aws_ssm_parameter" "oidc_client_secret" {
  name        = "/${var.name}/oidc_client_secret"
  description = "shopstream oidc_client_secret (Cognito's pages client)"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = aws_cognito_user_pool_client.pages.client_secret
}

# The first admin's password, read once, when the first task bootstraps the
# admin (var.admin_email). Shorter than 12 characters until set: the first
# start fails until it is.
resource "aws_ssm_parameter" "admin_password" {
  name        = "/${var.name}/admin_password"
  description = "shopstream admin_password (at least 12 characters)"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = "set me"
  lifecycle {
    ignore_changes = [value]
  }
}
