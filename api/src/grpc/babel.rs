//! `babel.v0.BabelService` over the Babel pricing service.

use proto::babel::v0 as pb;
use proto::babel::v0::babel_service_server::{BabelService, BabelServiceServer};
use services::babel::{
    Market, MarketPatch, NewMarket, NewRule, PriceRequest, PriceRule, PriceSource, Rounding,
    RuleFilter,
};
use tonic::{Request, Response, Status};

use super::{GrpcState, caller, cursor, limit, status};

pub fn server(state: GrpcState) -> BabelServiceServer<Babel> {
    BabelServiceServer::new(Babel(state))
}

pub struct Babel(GrpcState);

fn market_pb(m: Market) -> pb::Market {
    pb::Market {
        code: m.code,
        name: m.name,
        currency: m.currency,
        exponent: u32::from(m.exponent),
        locale: m.locale,
        countries: m.countries,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn rule_pb(r: PriceRule) -> pb::PriceRule {
    pb::PriceRule {
        id: r.id,
        market: r.market,
        sku: r.sku,
        category: r.category,
        kind: r.kind.as_str().to_owned(),
        amount: r.amount,
        multiplier: r.multiplier,
        multiplier_bp: r.multiplier_bp,
        rounding: r.rounding.as_str().to_owned(),
        tax_rate_bp: r.tax_rate_bp,
        tax_included: r.tax_included,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

fn rule_body(b: pb::RuleBody) -> Result<NewRule, Status> {
    let rounding = match b.rounding.as_str() {
        "" | "none" => Rounding::None,
        "to_99" => Rounding::To99,
        "whole" => Rounding::Whole,
        other => {
            return Err(Status::invalid_argument(format!(
                "rounding: {other:?} is not none, to_99 or whole"
            )));
        }
    };
    Ok(NewRule {
        market: b.market,
        sku: b.sku,
        category: b.category,
        amount: b.amount,
        multiplier: b.multiplier,
        rounding: Some(rounding),
        tax_rate_bp: Some(b.tax_rate_bp),
        tax_included: Some(b.tax_included),
    })
}

#[tonic::async_trait]
impl BabelService for Babel {
    async fn create_market(
        &self,
        req: Request<pb::CreateMarketRequest>,
    ) -> Result<Response<pb::Market>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let new = NewMarket {
            code: r.code,
            name: r.name,
            currency: r.currency,
            locale: r.locale,
            countries: r.countries,
        };
        let m = self
            .0
            .services
            .babel
            .create_market(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(market_pb(m)))
    }

    async fn get_market(
        &self,
        req: Request<pb::GetMarketRequest>,
    ) -> Result<Response<pb::Market>, Status> {
        let caller = caller(&self.0, &req)?;
        let m = self
            .0
            .services
            .babel
            .market(&caller, &req.into_inner().code)
            .await
            .map_err(status)?;
        Ok(Response::new(market_pb(m)))
    }

    async fn update_market(
        &self,
        req: Request<pb::UpdateMarketRequest>,
    ) -> Result<Response<pb::Market>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        if !r.replace_countries && !r.countries.is_empty() {
            return Err(Status::invalid_argument(
                "countries: set replace_countries to replace the market's countries",
            ));
        }
        let patch = MarketPatch {
            name: r.name,
            currency: r.currency,
            locale: r.locale,
            countries: r.replace_countries.then_some(r.countries),
        };
        let m = self
            .0
            .services
            .babel
            .update_market(&caller, &r.code, patch)
            .await
            .map_err(status)?;
        Ok(Response::new(market_pb(m)))
    }

    async fn delete_market(
        &self,
        req: Request<pb::GetMarketRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        self.0
            .services
            .babel
            .delete_market(&caller, &req.into_inner().code)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_markets(
        &self,
        req: Request<pb::ListMarketsRequest>,
    ) -> Result<Response<pb::ListMarketsResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let page = self
            .0
            .services
            .babel
            .markets(&caller, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListMarketsResponse {
            items: page.items.into_iter().map(market_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn create_rule(
        &self,
        req: Request<pb::RuleBody>,
    ) -> Result<Response<pb::PriceRule>, Status> {
        let caller = caller(&self.0, &req)?;
        let new = rule_body(req.into_inner())?;
        let r = self
            .0
            .services
            .babel
            .create_rule(&caller, new)
            .await
            .map_err(status)?;
        Ok(Response::new(rule_pb(r)))
    }

    async fn get_rule(
        &self,
        req: Request<pb::GetRuleRequest>,
    ) -> Result<Response<pb::PriceRule>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = self
            .0
            .services
            .babel
            .rule(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(rule_pb(r)))
    }

    async fn replace_rule(
        &self,
        req: Request<pb::ReplaceRuleRequest>,
    ) -> Result<Response<pb::PriceRule>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let body = r
            .rule
            .ok_or_else(|| Status::invalid_argument("rule: required"))?;
        let new = rule_body(body)?;
        let rule = self
            .0
            .services
            .babel
            .replace_rule(&caller, &r.id, new)
            .await
            .map_err(status)?;
        Ok(Response::new(rule_pb(rule)))
    }

    async fn delete_rule(
        &self,
        req: Request<pb::GetRuleRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        self.0
            .services
            .babel
            .delete_rule(&caller, &req.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_rules(
        &self,
        req: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let filter = RuleFilter {
            market: r.market,
            sku: r.sku,
            category: r.category,
        };
        let page = self
            .0
            .services
            .babel
            .rules(&caller, &filter, limit(r.limit), cursor(&r.cursor))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListRulesResponse {
            items: page.items.into_iter().map(rule_pb).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_price(
        &self,
        req: Request<pb::PriceRequest>,
    ) -> Result<Response<pb::Quote>, Status> {
        let caller = caller(&self.0, &req)?;
        let r = req.into_inner();
        let q = self
            .0
            .services
            .babel
            .price(
                &caller,
                &PriceRequest {
                    sku: r.sku,
                    category: r.category,
                    country: r.country,
                    locale: r.locale,
                    base_amount: r.base_amount,
                    base_currency: r.base_currency,
                },
            )
            .await
            .map_err(status)?;
        let source = match q.source {
            PriceSource::Sku => "sku",
            PriceSource::Category => "category",
            PriceSource::Base => "base",
        };
        Ok(Response::new(pb::Quote {
            sku: q.sku,
            country: q.country,
            market: q.market,
            currency: q.currency,
            exponent: u32::from(q.exponent),
            amount: q.amount,
            formatted: q.formatted,
            locale: q.locale,
            net_amount: q.net_amount,
            tax_amount: q.tax_amount,
            gross_amount: q.gross_amount,
            tax_rate_bp: q.tax_rate_bp,
            tax_included: q.tax_included,
            source: source.to_owned(),
            rule: q.rule.map(rule_pb),
        }))
    }
}
