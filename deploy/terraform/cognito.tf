# Sign-in through Cognito: the service verifies Cognito's ID and access
# tokens by the pool's JWKS (`jwks_url`, `jwks_issuer`, `jwks_audience`) and
# takes roles from the `cognito:groups` claim (admin, supplier, service).
# The storefront and dashboard sign in through the hosted UI: the service
# runs the code flow with the `pages` client (`oidc_client_id`) and links
# each Cognito user to a local account.

resource "aws_cognito_user_pool" "users" {
  name                     = var.name
  username_attributes      = ["email"]
  auto_verified_attributes = ["email"]
  deletion_protection      = "ACTIVE"
  mfa_configuration        = "OPTIONAL"

  software_token_mfa_configuration {
    enabled = true
  }

  password_policy {
    minimum_length                   = 12
    require_lowercase                = true
    require_uppercase                = true
    require_numbers                  = true
    require_symbols                  = false
    temporary_password_validity_days = 3
  }

  admin_create_user_config {
    allow_admin_create_user_only = false
  }

  account_recovery_setting {
    recovery_mechanism {
      name     = "verified_email"
      priority = 1
    }
  }

  user_pool_add_ons {
    advanced_security_mode = "ENFORCED"
  }

  # A supplier user's supplier (the service reads `custom:supplier_id` from
  # the ID token).
  schema {
    name                = "supplier_id"
    attribute_data_type = "String"
    mutable             = true
    string_attribute_constraints {
      min_length = 1
      max_length = 64
    }
  }
}

resource "aws_cognito_user_pool_client" "storefront" {
  name                                 = "${var.name}-storefront"
  user_pool_id                         = aws_cognito_user_pool.users.id
  generate_secret                      = false
  explicit_auth_flows                  = ["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
  prevent_user_existence_errors        = "ENABLED"
  supported_identity_providers         = ["COGNITO"]
  access_token_validity                = 15
  id_token_validity                    = 15
  refresh_token_validity               = 30
  token_validity_units {
    access_token  = "minutes"
    id_token      = "minutes"
    refresh_token = "days"
  }
}

# The hosted UI the pages send users to.
resource "aws_cognito_user_pool_domain" "hosted_ui" {
  domain       = var.cognito_domain_prefix != "" ? var.cognito_domain_prefix : "${var.name}-${data.aws_caller_identity.current.account_id}"
  user_pool_id = aws_cognito_user_pool.users.id
}

# The client the service signs the pages' users in with: a confidential
# client (its secret in SSM) running the code flow with PKCE, whose only
# redirect URI is the service's callback.
resource "aws_cognito_user_pool_client" "pages" {
  name                                 = "${var.name}-pages"
  user_pool_id                         = aws_cognito_user_pool.users.id
  generate_secret                      = true
  explicit_auth_flows                  = ["ALLOW_REFRESH_TOKEN_AUTH"]
  prevent_user_existence_errors        = "ENABLED"
  supported_identity_providers         = ["COGNITO"]
  allowed_oauth_flows_user_pool_client = true
  allowed_oauth_flows                  = ["code"]
  allowed_oauth_scopes                 = ["openid", "email", "profile"]
  callback_urls                        = ["${var.public_url}/api/auth/oidc/callback"]
  # Where Cognito's /logout may send the pages back to.
  logout_urls = ["${var.public_url}/", "${var.public_url}/dashboard"]
  # The service reads custom:supplier_id from the ID token.
  read_attributes       = ["email", "email_verified", "name", "custom:supplier_id"]
  access_token_validity = 15
  id_token_validity     = 15
  token_validity_units {
    access_token = "minutes"
    id_token     = "minutes"
  }
}

resource "aws_cognito_user_group" "roles" {
  for_each     = toset(["admin", "supplier", "service"])
  name         = each.key
  user_pool_id = aws_cognito_user_pool.users.id
  description  = "shopstream role ${each.key}"
}

locals {
  jwks_issuer = "https://cognito-idp.${var.region}.amazonaws.com/${aws_cognito_user_pool.users.id}"
  jwks_url    = "${local.jwks_issuer}/.well-known/jwks.json"
}
