output "url" {
  description = "The load balancer's address (point the certificate's DNS name at it)."
  value       = "https://${aws_lb.main.dns_name}"
}

output "ecr_repository_url" {
  description = "Push the image here: docker push <url>:<image_tag>."
  value       = aws_ecr_repository.shopstream.repository_url
}

output "kinesis_stream" {
  value = aws_kinesis_stream.events.name
}

output "tables" {
  value = [for t in aws_dynamodb_table.tables : t.name]
}

output "images_bucket" {
  value = aws_s3_bucket.images.bucket
}

output "cognito_user_pool_id" {
  value = aws_cognito_user_pool.users.id
}

output "cognito_client_id" {
  value = aws_cognito_user_pool_client.storefront.id
}

output "cognito_hosted_ui" {
  description = "Where the pages send users to sign in."
  value       = "https://${aws_cognito_user_pool_domain.hosted_ui.domain}.auth.${var.region}.amazoncognito.com"
}

output "jwks_url" {
  value = local.jwks_url
}

output "jwt_secret_parameter" {
  description = "Set the HS256 key here before the first start (docs/deploy-aws.md)."
  value       = aws_ssm_parameter.jwt_secret.name
}

output "admin_password_parameter" {
  description = "Set the first admin's password here before the first start (docs/deploy-aws.md)."
  value       = aws_ssm_parameter.admin_password.name
}

output "topics" {
  value = {
    orders          = aws_sns_topic.orders.arn
    supplier_alerts = aws_sns_topic.supplier_alerts.arn
    ops             = aws_sns_topic.ops.arn
  }
}

output "cluster" {
  value = aws_ecs_cluster.main.name
}

output "service" {
  value = aws_ecs_service.shopstream.name
}
