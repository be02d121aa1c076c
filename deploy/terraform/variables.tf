variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "shopstream"
}

variable "region" {
  description = "The AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "table_prefix" {
  description = "Prefix of the DynamoDB tables (the service's `table_prefix`)."
  type        = string
  default     = "shopstream_"
}

variable "kinesis_stream_name" {
  description = "The event stream (the service's `kinesis_stream`)."
  type        = string
  default     = "shopstream-events"
}

variable "kinesis_retention_hours" {
  description = "How long the stream keeps records (24 to 8760)."
  type        = number
  default     = 168
}

variable "images_bucket_name" {
  description = "The S3 bucket for product images (globally unique)."
  type        = string
}

variable "vpc_cidr" {
  description = "The VPC's address range."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "The availability zones (of var.region) to spread the tasks and the load balancer over: at least two."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b"]
  validation {
    condition     = length(var.availability_zones) >= 2
    error_message = "Use at least two availability zones."
  }
}

variable "certificate_arn" {
  description = "The ACM certificate of the load balancer's HTTPS listener."
  type        = string
}

variable "image_tag" {
  description = "The tag of the shopstream image in the ECR repository."
  type        = string
  default     = "latest"
}

variable "adot_image" {
  description = "The AWS Distro for OpenTelemetry collector image (sidecar: traces to X-Ray, metrics to CloudWatch)."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "task_cpu" {
  description = "CPU units per task (1024 = one vCPU)."
  type        = number
  default     = 1024
}

variable "task_memory" {
  description = "Memory per task, in MiB."
  type        = number
  default     = 2048
}

variable "min_tasks" {
  description = "The fewest tasks autoscaling keeps (at least one per availability zone)."
  type        = number
  default     = 2
}

variable "max_tasks" {
  description = "The most tasks autoscaling starts. More tasks than shards leaves some without a shard to read (they still serve HTTP)."
  type        = number
  default     = 8
}

variable "cpu_target_percent" {
  description = "Autoscaling keeps the service's average CPU near this."
  type        = number
  default     = 60
}

variable "iterator_age_scale_out_ms" {
  description = "Add a task when the stream's consumers fall this far behind."
  type        = number
  default     = 30000
}

variable "stop_timeout_secs" {
  description = "Seconds ECS waits after SIGTERM before SIGKILL (at most 120). The service releases its leases and closes websockets well within it."
  type        = number
  default     = 30
}

variable "waf_rate_limit" {
  description = "Requests per 5 minutes from one address before WAF blocks it."
  type        = number
  default     = 3000
}

variable "admin_email" {
  description = "The first admin's e-mail address (a local account; its password is the SSM parameter admin_password_parameter). More admins: the Cognito group admin."
  type        = string
}

variable "ses_from_address" {
  description = "The sender of order e-mails and supplier alerts: an SES identity created here (verify it by the e-mail SES sends)."
  type        = string
}

variable "supplier_notifier" {
  description = "How low-stock alerts reach suppliers: ses, sns or webhook (per supplier: the webhook URL on its record)."
  type        = string
  default     = "ses"
  validation {
    condition     = contains(["ses", "sns", "webhook"], var.supplier_notifier)
    error_message = "supplier_notifier is ses, sns or webhook."
  }
}

variable "alarm_email" {
  description = "An address subscribed to the ops alarms topic (empty: none; subscribe later)."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "How long CloudWatch keeps the service's logs."
  type        = number
  default     = 365
}

variable "otel_sampling_ratio" {
  description = "The share of traces kept (0 to 1); the ADOT collector sends them to X-Ray."
  type        = number
  default     = 0.05
}

variable "public_url" {
  description = "The https:// address browsers reach the service at (the name on certificate_arn, pointed at the load balancer). The storefront and dashboard sign in through Cognito's hosted UI and come back to {public_url}/api/auth/oidc/callback."
  type        = string
  validation {
    condition     = can(regex("^https://[^/?#]+$", var.public_url))
    error_message = "public_url is https://host (no path, query or fragment)."
  }
}

variable "cognito_domain_prefix" {
  description = "The hosted UI's domain prefix (https://PREFIX.auth.REGION.amazoncognito.com); empty: the service's name and the account id."
  type        = string
  default     = ""
}

variable "enable_cloudtrail" {
  description = "Create a multi-region CloudTrail trail for the account's API calls (skip if the organisation has one)."
  type        = bool
  default     = false
}

variable "alarm_5xx_percent" {
  description = "Alarm when this share of requests answers 5xx over 5 minutes."
  type        = number
  default     = 1
}

variable "alarm_p99_seconds" {
  description = "Alarm when the load balancer's p99 response time exceeds this."
  type        = number
  default     = 0.5
}

variable "alarm_iterator_age_ms" {
  description = "Alarm when the stream's consumers fall this far behind."
  type        = number
  default     = 60000
}
