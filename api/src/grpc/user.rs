//! `user.v0.UserService` and `admin.v0.AdminService` over the user service.

use proto::admin::v0 as admin_pb;
use proto::admin::v0::admin_service_server::{AdminService, AdminServiceServer};
use proto::user::v0 as pb;
use proto::user::v0::user_service_server::{UserService, UserServiceServer};
use services::security::Role;
use services::user::{NewUser, ProfileUpdate, Tokens, User, UserFilter};
use tonic::{Request, Response, Status};

use super::{GrpcState, caller, cursor, limit, status};

pub fn user_server(state: GrpcState) -> UserServiceServer<Users> {
    UserServiceServer::new(Users(state))
}

pub fn admin_server(state: GrpcState) -> AdminServiceServer<Admin> {
    AdminServiceServer::new(Admin(state))
}

pub struct Users(GrpcState);
pub struct Admin(GrpcState);

pub fn user_pb(u: User) -> pb::User {
    pb::User {
        id: u.id,
        username: u.username,
        email: u.email,
        display_name: u.display_name,
        roles: u.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        disabled: u.disabled,
        created_at: u.created_at,
        updated_at: u.updated_at,
        locale: u.locale.unwrap_or_default(),
    }
}

fn tokens_pb(t: Tokens) -> pb::Tokens {
    pb::Tokens {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        token_type: t.token_type.to_owned(),
        expires_in: t.expires_in,
        user: Some(user_pb(t.user)),
    }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewUser {
            username: r.username,
            email: r.email,
            password: r.password,
            display_name: (!r.display_name.is_empty()).then_some(r.display_name),
            referral_code: (!r.referral_code.is_empty()).then_some(r.referral_code),
            device_fingerprint: (!r.device_fingerprint.is_empty()).then_some(r.device_fingerprint),
        };
        let u = self
            .0
            .services
            .referrals
            .register(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(user_pb(u)))
    }

    async fn login(&self, req: Request<pb::LoginRequest>) -> Result<Response<pb::Tokens>, Status> {
        let r = req.into_inner();
        let t = self
            .0
            .services
            .users
            .login(&r.login, &r.password)
            .await
            .map_err(status)?;
        Ok(Response::new(tokens_pb(t)))
    }

    async fn refresh(
        &self,
        req: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::Tokens>, Status> {
        let r = req.into_inner();
        let t = self
            .0
            .services
            .users
            .refresh(&r.refresh_token)
            .await
            .map_err(status)?;
        Ok(Response::new(tokens_pb(t)))
    }

    async fn get_me(&self, req: Request<pb::GetMeRequest>) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.0, &req)?;
        let u = self.0.services.users.me(&caller).await.map_err(status)?;
        Ok(Response::new(user_pb(u)))
    }

    async fn get_user(
        &self,
        req: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.0, &req)?;
        let u = self
            .0
            .services
            .users
            .get(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(user_pb(u)))
    }

    async fn update_profile(
        &self,
        req: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let change = ProfileUpdate {
            display_name: r.display_name,
            email: r.email,
            current_password: (!r.current_password.is_empty()).then_some(r.current_password),
            new_password: r.new_password,
            locale: r.locale,
        };
        let u = self
            .0
            .services
            .users
            .update_profile(&caller, change)
            .await
            .map_err(status)?;
        Ok(Response::new(user_pb(u)))
    }
}

fn role(s: &str) -> Result<Role, Status> {
    Role::parse(s).map_err(status)
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn list_users(
        &self,
        req: Request<admin_pb::ListUsersRequest>,
    ) -> Result<Response<admin_pb::ListUsersResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = UserFilter {
            role: r.role.as_deref().map(role).transpose()?,
            disabled: r.disabled,
            query: r.query,
        };
        let page = self
            .0
            .services
            .admin
            .users
            .list(&caller, &filter, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(admin_pb::ListUsersResponse {
            users: page.items.into_iter().map(user_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn grant_role(
        &self,
        req: Request<admin_pb::GrantRoleRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let u = self
            .0
            .services
            .admin
            .users
            .set_role(&caller, &r.user_id, role(&r.role)?, true)
            .await
            .map_err(status)?;
        Ok(Response::new(user_pb(u)))
    }

    async fn revoke_role(
        &self,
        req: Request<admin_pb::RevokeRoleRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let u = self
            .0
            .services
            .admin
            .users
            .set_role(&caller, &r.user_id, role(&r.role)?, false)
            .await
            .map_err(status)?;
        Ok(Response::new(user_pb(u)))
    }

    async fn disable_user(
        &self,
        req: Request<admin_pb::DisableUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.0, &req)?;
        let id = req.into_inner().user_id;
        let u = self
            .0
            .services
            .admin
            .users
            .set_disabled(&caller, &id, true)
            .await
            .map_err(status)?;
        Ok(Response::new(user_pb(u)))
    }

    async fn enable_user(
        &self,
        req: Request<admin_pb::EnableUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let caller = caller(&self.0, &req)?;
        let id = req.into_inner().user_id;
        let u = self
            .0
            .services
            .admin
            .users
            .set_disabled(&caller, &id, false)
            .await
            .map_err(status)?;
        Ok(Response::new(user_pb(u)))
    }
}
