//! `localization.v0.LocalizationService` over the localization service.

use proto::convert;
use proto::localization::v0 as pb;
use proto::localization::v0::localization_service_server::{
    LocalizationService, LocalizationServiceServer,
};
use services::localization::{FormatRequest, Import, Message, MessageFilter, MessageText};
use tonic::{Request, Response, Status};

use super::{GrpcState, bad_json, caller, cursor, limit, status};

pub fn server(state: GrpcState) -> LocalizationServiceServer<Localization> {
    LocalizationServiceServer::new(Localization(state))
}

pub struct Localization(GrpcState);

fn message_pb(m: Message) -> pb::Message {
    pb::Message {
        namespace: m.namespace,
        key: m.key,
        locale: m.locale,
        value: m.value,
        updated_by: m.updated_by,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

#[tonic::async_trait]
impl LocalizationService for Localization {
    async fn put_message(
        &self,
        req: Request<pb::PutMessageRequest>,
    ) -> Result<Response<pb::PutMessageResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let (m, created) = self
            .0
            .services
            .localization
            .put(
                &caller,
                &r.namespace,
                &r.locale,
                &r.key,
                MessageText { value: r.value },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PutMessageResponse {
            message: Some(message_pb(m)),
            created,
        }))
    }

    async fn get_message(
        &self,
        req: Request<pb::MessageRef>,
    ) -> Result<Response<pb::Message>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let m = self
            .0
            .services
            .localization
            .get(&caller, &r.namespace, &r.locale, &r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(message_pb(m)))
    }

    async fn delete_message(
        &self,
        req: Request<pb::MessageRef>,
    ) -> Result<Response<pb::DeleteMessageResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        self.0
            .services
            .localization
            .delete(&caller, &r.namespace, &r.locale, &r.key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteMessageResponse {}))
    }

    async fn list_messages(
        &self,
        req: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = MessageFilter {
            namespace: r.namespace,
            locale: r.locale,
            key_prefix: r.key_prefix,
        };
        let page = self
            .0
            .services
            .localization
            .list(&caller, filter, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListMessagesResponse {
            items: page.items.into_iter().map(message_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn import_messages(
        &self,
        req: Request<pb::ImportMessagesRequest>,
    ) -> Result<Response<pb::ImportMessagesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let import = Import {
            messages: r.messages.into_iter().collect(),
            replace: r.replace,
        };
        let result = self
            .0
            .services
            .localization
            .import(&caller, &r.namespace, &r.locale, import)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ImportMessagesResponse {
            created: result.created,
            updated: result.updated,
            unchanged: result.unchanged,
            deleted: result.deleted,
        }))
    }

    async fn export_messages(
        &self,
        req: Request<pb::ExportMessagesRequest>,
    ) -> Result<Response<pb::ExportMessagesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let e = self
            .0
            .services
            .localization
            .export(&caller, &r.namespace, &r.locale)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ExportMessagesResponse {
            namespace: e.namespace,
            locale: e.locale,
            messages: e.messages.into_iter().collect(),
        }))
    }

    async fn get_namespace(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::NamespaceSummary>, Status> {
        let caller = caller(&self.0, &req)?;
        let s = self
            .0
            .services
            .localization
            .summary(&caller, &req.into_inner().namespace)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::NamespaceSummary {
            namespace: s.namespace,
            default_locale: s.default_locale,
            keys: s.keys,
            locales: s
                .locales
                .into_iter()
                .map(|l| pb::LocaleSummary {
                    locale: l.locale,
                    messages: l.messages,
                    missing: l.missing,
                })
                .collect(),
        }))
    }

    async fn list_missing(
        &self,
        req: Request<pb::ListMissingRequest>,
    ) -> Result<Response<pb::ListMissingResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .localization
            .missing(
                &caller,
                &r.namespace,
                &r.locale,
                limit(r.limit),
                cursor(&r.cursor),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListMissingResponse {
            items: page
                .items
                .into_iter()
                .map(|m| pb::MissingKey {
                    key: m.key,
                    locales: m.locales,
                })
                .collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn format(
        &self,
        req: Request<pb::FormatRequest>,
    ) -> Result<Response<pb::FormatResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let args = r
            .args
            .map(convert::struct_to_map)
            .transpose()
            .map_err(|e| bad_json("args", e))?
            .unwrap_or_default();
        let f = self
            .0
            .services
            .localization
            .format(
                &caller,
                &FormatRequest {
                    namespace: r.namespace,
                    key: r.key,
                    locale: r.locale,
                    args,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FormatResponse {
            text: f.text,
            locale: f.locale,
            requested_locale: f.requested_locale,
            fallback: f.fallback,
        }))
    }
}
